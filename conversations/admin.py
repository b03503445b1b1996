from __future__ import annotations

import time
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from conversations.models import Conversation, Message, Participant
from core.errors import NexusError
from realtime.presence import presence, presence_snapshot
from runs.models import ACTIVE_RUN_STATUSES, Run
from runs.stopping import conversation_delete_with_runs, run_stop

LIVE_RUNS_LIMIT = 200


def _stop_runs(request: HttpRequest, runs: list[Run]) -> tuple[int, list[str]]:
    """Stop runs in flight through the same service the API and sockets use. Returns
    (how many were told to stop, problems)."""
    stopped, problems = 0, []
    for run in runs:
        try:
            stopped += len(
                async_to_sync(run_stop)(
                    user=request.user, conversation_id=run.conversation_id, run_id=str(run.pk)
                )
            )
        except NexusError as exc:  # it finished meanwhile (not found), or the conversation is gone
            problems.append(f"{run}: {exc.message}")
    return stopped, problems


def _delete_with_runs(conversation_ids: list[Any]) -> None:
    for conversation_id in conversation_ids:
        try:
            conversation_delete_with_runs(user=None, conversation_id=conversation_id)
        except NexusError:  # deleted meanwhile
            pass


async def _presence() -> dict[str, Any]:
    """This process's sockets and the cluster-wide counts, read on the event loop that owns them."""
    return {"snapshot": await presence_snapshot(), "sockets": presence.local_sockets()}


def _live_data() -> dict[str, Any]:
    now = timezone.now()
    runs = (
        Run.objects.filter(status__in=ACTIVE_RUN_STATUSES)
        .select_related("agent", "conversation", "conversation__owner")
        .order_by("created_at")[:LIVE_RUNS_LIMIT]
    )
    here = async_to_sync(_presence)()
    wall = time.time()
    return {
        "generated_at": now.isoformat(),
        "snapshot": here["snapshot"],
        "runs": [
            {
                "id": str(run.pk),
                "url": reverse("admin:runs_run_change", args=[run.pk]),
                "status": run.status,
                "agent": str(run.agent),
                "provider": f"{run.agent.provider} · {run.agent.model}",
                "conversation": str(run.conversation),
                "conversation_url": reverse(
                    "admin:conversations_conversation_change", args=[run.conversation_id]
                ),
                "user": run.conversation.owner.get_username(),
                "owner": run.owner,
                "age_seconds": round((now - (run.started_at or run.created_at)).total_seconds(), 1),
                "heartbeat_seconds": round((now - run.heartbeat_at).total_seconds(), 1)
                if run.heartbeat_at
                else None,
                "cancel_requested": run.cancel_requested,
            }
            for run in runs
        ],
        "sockets": [
            {
                "socket_id": socket["socket_id"][:12],
                "username": socket["username"],
                "path": socket["path"],
                "auth": socket["auth"],
                "conversation_id": socket["conversation_id"],
                "last_seq": socket["last_seq"],
                "connected_seconds": round(wall - socket["connected_at"], 1),
            }
            for socket in sorted(here["sockets"], key=lambda s: s["connected_at"])
        ],
    }


class ParticipantInline(admin.TabularInline):
    model = Participant
    extra = 0
    autocomplete_fields = ("agent",)


class MessageInline(admin.TabularInline):
    """The history under its conversation, read-only: messages are written by runs, not by hand."""

    model = Message
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("seq", "created_at")
    fields = ("seq", "role", "agent", "type", "status", "short_content", "created_at")
    readonly_fields = fields

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return obj.content if len(obj.content) <= 200 else obj.content[:200] + "…"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class RunInline(admin.TabularInline):
    model = Run
    fk_name = "conversation"
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("id", "agent", "status", "owner", "started_at", "finished_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "session_type", "status", "message_count", "last_seq", "updated_at")
    list_filter = ("session_type", "status", "pinned", "archived", "created_at")
    search_fields = ("title", "owner__username", "id")
    readonly_fields = ("id", "last_seq", "created_at", "updated_at")
    autocomplete_fields = ("owner",)
    inlines = (ParticipantInline, MessageInline, RunInline)
    date_hierarchy = "created_at"
    actions = ("stop_runs",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("owner").annotate(_messages=Count("messages"))

    @admin.display(description="messages", ordering="_messages")
    def message_count(self, obj: Conversation) -> int:
        return obj._messages

    # Deleting from the admin (its delete view, its "delete selected" action) stops the replies in
    # flight and tells the watchers, like the REST DELETE: the rows' cascade alone would leave the
    # runs asking their providers, and the sockets waiting.
    def delete_model(self, request, obj: Conversation) -> None:
        _delete_with_runs([obj.pk])

    def delete_queryset(self, request, queryset) -> None:
        _delete_with_runs(list(queryset.values_list("pk", flat=True)))

    @admin.action(description="Stop the replies in flight of selected conversations")
    def stop_runs(self, request, queryset):
        runs = list(Run.objects.filter(conversation__in=queryset, status__in=ACTIVE_RUN_STATUSES))
        stopped, problems = _stop_runs(request, runs)
        for problem in problems:
            self.message_user(request, problem, messages.WARNING)
        self.message_user(request, f"{stopped} run(s) told to stop.", messages.SUCCESS)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("__str__", "conversation", "role", "agent", "type", "status", "opinion", "created_at")
    list_filter = ("role", "type", "status", "opinion")
    search_fields = ("content", "conversation__title", "conversation__id", "client_message_id")
    readonly_fields = [f.name for f in Message._meta.fields]
    list_select_related = ("conversation", "agent")

    def has_add_permission(self, request) -> bool:
        return False


class InFlightFilter(admin.SimpleListFilter):
    title = "in flight"
    parameter_name = "in_flight"

    def lookups(self, request, model_admin):
        return (("yes", "In flight (queued or running)"), ("no", "Finished"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(status__in=ACTIVE_RUN_STATUSES)
        if self.value() == "no":
            return queryset.exclude(status__in=ACTIVE_RUN_STATUSES)
        return queryset


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    change_list_template = "admin/runs/run/change_list.html"
    actions = ("stop_runs",)
    list_display = (
        "__str__",
        "conversation",
        "agent",
        "status",
        "owner",
        "heartbeat_at",
        "started_at",
        "finished_at",
    )
    list_filter = (InFlightFilter, "status", "agent__provider")
    search_fields = ("id", "conversation__title", "agent__name", "owner")
    readonly_fields = [f.name for f in Run._meta.fields]
    list_select_related = ("conversation", "agent")

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Stop selected runs")
    def stop_runs(self, request, queryset):
        runs = list(queryset.filter(status__in=ACTIVE_RUN_STATUSES))
        skipped = queryset.count() - len(runs)
        stopped, problems = _stop_runs(request, runs)
        for problem in problems:
            self.message_user(request, problem, messages.WARNING)
        if skipped:
            self.message_user(request, f"{skipped} run(s) had already finished.", messages.INFO)
        self.message_user(request, f"{stopped} run(s) told to stop.", messages.SUCCESS)

    # -- the live view: runs in flight and this process's sockets, refreshed by the page ------

    def get_urls(self):
        live = [
            path("live/", self.admin_site.admin_view(self.live_view), name="runs_run_live"),
            path("live/data/", self.admin_site.admin_view(self.live_data), name="runs_run_live_data"),
            path("live/stop/", self.admin_site.admin_view(self.live_stop), name="runs_run_live_stop"),
        ]
        return live + super().get_urls()

    def live_view(self, request: HttpRequest) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Live: runs in flight and sockets",
            "opts": self.model._meta,
            "live": _live_data(),
            "can_stop": self.has_change_permission(request),
        }
        return TemplateResponse(request, "admin/runs/run/live.html", context)

    def live_data(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(_live_data())

    def live_stop(self, request: HttpRequest) -> HttpResponse:
        return require_POST(self._live_stop)(request)

    def _live_stop(self, request: HttpRequest) -> JsonResponse:
        if not self.has_change_permission(request):
            return JsonResponse({"detail": "You may not stop runs.", "code": "forbidden"}, status=403)
        try:
            run = Run.objects.filter(
                pk=request.POST.get("run_id", ""), status__in=ACTIVE_RUN_STATUSES
            ).first()
        except ValidationError:  # not a UUID
            run = None
        if run is None:
            return JsonResponse({"detail": "No run in flight with that id.", "code": "not_found"}, status=404)
        stopped, problems = _stop_runs(request, [run])
        return JsonResponse({"stopped": stopped, "problems": problems})
