from __future__ import annotations

from django.contrib import admin
from django.db.models import Count

from conversations.models import Conversation, Message, Participant, Run


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
    list_filter = ("session_type", "status", "created_at")
    search_fields = ("title", "owner__username", "id")
    readonly_fields = ("id", "last_seq", "created_at", "updated_at")
    autocomplete_fields = ("owner",)
    inlines = (ParticipantInline, MessageInline, RunInline)
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("owner").annotate(_messages=Count("messages"))

    @admin.display(description="messages", ordering="_messages")
    def message_count(self, obj: Conversation) -> int:
        return obj._messages


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("__str__", "conversation", "role", "agent", "type", "status", "opinion", "created_at")
    list_filter = ("role", "type", "status", "opinion")
    search_fields = ("content", "conversation__title", "conversation__id", "client_message_id")
    readonly_fields = [f.name for f in Message._meta.fields]
    list_select_related = ("conversation", "agent")

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
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
    list_filter = ("status", "agent__provider")
    search_fields = ("id", "conversation__title", "agent__name", "owner")
    readonly_fields = [f.name for f in Run._meta.fields]
    list_select_related = ("conversation", "agent")

    def has_add_permission(self, request) -> bool:
        return False
