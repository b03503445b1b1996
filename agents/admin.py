from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count

from agents.models import Agent, AgentStatus
from agents.provider_config import generation_options_for
from agents.services import agent_set_status
from providers.base import ProviderError


async def _agent_provider_check(agent: Agent) -> dict[str, Any]:
    """Ask the agent's provider, with the agent's own options (base URL, key variable), whether
    it answers and offers the agent's model. Bounded by NEXUS_PROVIDER_STATUS_TIMEOUT; never raises."""
    from providers.registry import get_provider

    timeout = settings.NEXUS_PROVIDER_STATUS_TIMEOUT
    try:
        options = generation_options_for(agent)  # configures the registry (egress policy) first
        provider = get_provider(agent.provider)
        status = await asyncio.wait_for(provider.status(options=options), timeout)
    except TimeoutError:
        return {"reachable": False, "detail": f"no answer within {timeout:g} s", "models": []}
    except ProviderError as exc:
        return {"reachable": False, "detail": exc.message, "models": []}
    except Exception as exc:  # status() never raises by contract; an adapter bug reads as unreachable
        return {"reachable": False, "detail": f"check failed ({exc.__class__.__name__})", "models": []}
    return {"reachable": bool(status.reachable), "detail": status.detail or "", "models": list(status.models)}


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "provider",
        "model",
        "status",
        "workspace",
        "owner",
        "conversation_count",
        "last_active_at",
        "updated_at",
    )
    list_filter = ("status", "provider", "workspace", ("owner", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "description", "model", "provider", "owner__username")
    readonly_fields = ("id", "created_at", "updated_at", "last_active_at")
    autocomplete_fields = ("owner",)
    actions = ("activate", "pause", "test_provider")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "name",
                    "emoji",
                    "description",
                    "owner",
                    "workspace",
                    "status",
                    "cooldown_until",
                )
            },
        ),
        (
            "Model",
            {
                "fields": (
                    "provider",
                    "model",
                    "base_url",
                    "temperature",
                    "max_tokens",
                    "context_window",
                    "config",
                )
            },
        ),
        (
            "Behaviour",
            {"fields": ("system_prompt", "personality", "capabilities", "interaction_modes", "tools")},
        ),
        ("Activity", {"fields": ("last_active_at", "created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("owner")
            .annotate(_conversations=Count("conversations"))
        )

    @admin.display(description="conversations", ordering="_conversations")
    def conversation_count(self, obj: Agent) -> int:
        return obj._conversations

    @admin.action(description="Activate selected agents")
    def activate(self, request, queryset):
        for agent in queryset:
            agent_set_status(agent=agent, status=AgentStatus.ACTIVE)
        self.message_user(request, f"{queryset.count()} agent(s) activated.", messages.SUCCESS)

    @admin.action(description="Pause selected agents")
    def pause(self, request, queryset):
        for agent in queryset:
            agent_set_status(agent=agent, status=AgentStatus.PAUSED)
        self.message_user(request, f"{queryset.count()} agent(s) paused.", messages.SUCCESS)

    @admin.action(description="Test the provider of selected agents")
    def test_provider(self, request, queryset):
        for agent in queryset[:20]:
            check = async_to_sync(_agent_provider_check)(agent)
            where = f"{agent.provider}" + (f" at {agent.base_url}" if agent.base_url else "")
            if not check["reachable"]:
                detail = f": {check['detail']}" if check["detail"] else ""
                self.message_user(request, f"{agent}: {where} is unreachable{detail}.", messages.ERROR)
            elif check["models"] and agent.model not in check["models"]:
                offered = ", ".join(check["models"][:8])
                self.message_user(
                    request,
                    f"{agent}: {where} answers, but does not list the model {agent.model} (it offers {offered}).",
                    messages.WARNING,
                )
            else:
                self.message_user(
                    request, f"{agent}: {where} answers; model {agent.model} is available.", messages.SUCCESS
                )
