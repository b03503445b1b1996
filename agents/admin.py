from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count

from agents.models import Agent, AgentStatus
from agents.services import agent_set_status


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
    actions = ("activate", "pause")
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
        ("Model", {"fields": ("provider", "model", "base_url", "temperature", "max_tokens", "config")}),
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
