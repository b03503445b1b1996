from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count
from django.utils.html import format_html, format_html_join

from agents.knowledge import knowledge_bases_validate
from agents.mcp import credential_encrypt, mcp_server_validate, mcp_tool_refs_resolve
from agents.model_registry import model_info_check, model_info_of
from agents.models import (
    AGENT_EDITABLE_FIELDS,
    Agent,
    AgentStatus,
    McpServer,
    McpTransport,
    McpUserCredential,
    ModelEntry,
)
from agents.provider_config import agent_problems, generation_options_for, provider_problem
from agents.services import agent_set_status, tool_specs_validate
from agents.tools.mcp import describe_failure, mcp_refresh_tools_blocking
from core.errors import ValidationFailed
from providers.base import ProviderError
from providers.registry import get_provider, registry


async def _agent_provider_check(agent: Agent) -> dict[str, Any]:
    """Ask the agent's provider, with the agent's own options (base URL, key variable), whether
    it answers and offers the agent's model. Bounded by NEXUS_PROVIDER_STATUS_TIMEOUT; never raises."""
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


class AgentAdminForm(forms.ModelForm):
    """The provider must be one of the registry's; the model a name (no spaces, no control
    characters). A missing key is not refused (the operator may set it later): the list and the
    change page say so ("Usable")."""

    class Meta:
        model = Agent
        fields = ("provider", "model")  # the admin adds the rest of its fieldsets

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "provider" in self.fields:
            self.fields[
                "provider"
            ].help_text = f"One of the registered providers: {', '.join(registry.names())}."

    def clean_provider(self) -> str:
        provider = (self.cleaned_data.get("provider") or "").strip()
        problem = provider_problem(provider)
        if problem:
            raise forms.ValidationError(problem, code="unknown_provider")
        return provider

    def _tools_check(self, cleaned: dict[str, Any]) -> None:
        """Tool specs as the API checks them; an MCP entry must name a server the agent's owner
        may use, and gets its default name (<server>__<tool>)."""
        if "tools" in cleaned:
            owner = cleaned.get("owner", getattr(self.instance, "owner", None))
            try:
                cleaned["tools"] = mcp_tool_refs_resolve(
                    tool_specs_validate(cleaned["tools"] or []), owner_id=getattr(owner, "pk", None)
                )
            except ValidationFailed as exc:
                for problems in (exc.details or {"tools": [exc.message]}).values():
                    for problem in problems:
                        self.add_error("tools", f"{exc.message} {problem}")

    def clean_model(self) -> str:
        model = (self.cleaned_data.get("model") or "").strip()
        if not model:
            raise forms.ValidationError("Name the model, e.g. smollm2-135m-instruct.", code="required")
        if any(ch.isspace() or ord(ch) < 32 for ch in model):
            raise forms.ValidationError(
                "A model name has no spaces or control characters.", code="invalid_model"
            )
        return model

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        self._tools_check(cleaned)
        if "knowledge_bases" in cleaned:
            # The owner may list only bases they can read (a shared agent: bases that exist).
            owner = cleaned.get("owner", self.instance.owner if self.instance.pk else None)
            current = self.instance.knowledge_bases if self.instance.pk else []
            try:
                cleaned["knowledge_bases"] = knowledge_bases_validate(
                    cleaned["knowledge_bases"] or [], owner=owner, current=current
                )
            except ValidationFailed as exc:
                details = exc.details if isinstance(exc.details, dict) else {}
                self.add_error("knowledge_bases", "; ".join(details.get("knowledge_bases") or [exc.message]))
        return cleaned


# The form shows every field of AGENT_EDITABLE_FIELDS: these two groups, and the rest on top.
_MODEL_FIELDS = ("provider", "model", "base_url", "temperature", "max_tokens", "context_window", "config")
_BEHAVIOUR_FIELDS = ("system_prompt", "personality", "capabilities", "interaction_modes", "tools")
_KNOWLEDGE_FIELDS = ("knowledge_bases", "knowledge_mode")
_IDENTITY_FIELDS = tuple(
    name
    for name in AGENT_EDITABLE_FIELDS
    if name not in _MODEL_FIELDS and name not in _BEHAVIOUR_FIELDS and name not in _KNOWLEDGE_FIELDS
)


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentAdminForm
    list_display = (
        "__str__",
        "usable",
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
    readonly_fields = ("id", "usability", "created_at", "updated_at", "last_active_at")
    autocomplete_fields = ("owner",)
    actions = ("activate", "pause", "test_provider")
    fieldsets = (
        (None, {"fields": ("id", "usability", *_IDENTITY_FIELDS, "owner", "cooldown_until")}),
        ("Model", {"fields": _MODEL_FIELDS}),
        ("Behaviour", {"fields": _BEHAVIOUR_FIELDS}),
        ("Knowledge", {"fields": _KNOWLEDGE_FIELDS}),
        ("Activity", {"fields": ("last_active_at", "created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("owner")
            .annotate(_conversations=Count("conversations"))
        )

    @admin.display(description="usable")
    def usable(self, obj: Agent) -> str:
        """Yes, or why not (the same words as the change page)."""
        problems = agent_problems(obj)
        if not problems:
            return format_html('<span class="agent-usable" data-usable="yes">yes</span>')
        return format_html('<span class="agent-usable" data-usable="no">no: {}</span>', " ".join(problems))

    @admin.display(description="Usable")
    def usability(self, obj: Agent) -> str:
        if obj.pk is None:
            return "Checked when saved."
        problems = agent_problems(obj)
        if not problems:
            return format_html(
                '<span class="agent-usable" data-usable="yes">Yes: it can answer (the "Test the provider" action '
                "asks the provider itself).</span>"
            )
        items = format_html_join("", "<li>{}</li>", ((problem,) for problem in problems))
        return format_html('<ul class="agent-usable" data-usable="no">{}</ul>', items)

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


@admin.register(ModelEntry)
class ModelEntryAdmin(admin.ModelAdmin):
    """The model registry's rows (docs/dialects.md "Seed 002: models"): empty owner = shared."""

    list_display = (
        "model_name",
        "display_name",
        "provider",
        "model_type",
        "owner",
        "connect_status",
        "checked_at",
    )
    list_filter = ("provider", "model_type", "connect_status")
    search_fields = ("model_name", "display_name", "model_repo")
    readonly_fields = (
        "connect_status",
        "connect_detail",
        "checked_at",
        "created_by",
        "created_at",
        "updated_at",
    )
    actions = ("health_check",)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.action(description="Check the health of selected models")
    def health_check(self, request, queryset):
        for entry in queryset[:20]:
            health = async_to_sync(model_info_check)(model_info_of(entry))
            level = messages.SUCCESS if health.available else messages.ERROR
            self.message_user(
                request, f"{entry.model_name}: {health.connect_status} ({health.detail})", level
            )


# --- MCP servers (docs/mcp.md) ----------------------------------------------------------------


class McpServerAdminForm(forms.ModelForm):
    """The server's fields, checked by ``agents.mcp.mcp_server_validate``; the credential is
    write-only: typed in, stored encrypted, never shown again."""

    credential = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="The credential header's whole value (e.g. Bearer abc123). Write-only: stored "
        "encrypted and never shown. Leave empty to keep the current one.",
    )
    clear_credential = forms.BooleanField(required=False, help_text="Remove the stored credential.")

    class Meta:
        model = McpServer
        fields = (
            "name",
            "description",
            "owner",
            "enabled",
            "transport",
            "url",
            "command",
            "args",
            "credential_header",
            "credential_env",
            "per_user_credentials",
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        server: McpServer = self.instance
        for name in self.Meta.fields:
            if name in cleaned:
                setattr(server, name, cleaned[name])
        stored = server.credential_encrypted
        if cleaned.get("clear_credential"):
            server.credential_encrypted = ""
        elif cleaned.get("credential"):
            server.credential_encrypted = "pending"  # set for real in save_model, encrypted
        try:
            mcp_server_validate(server, by_staff=True)
        except ValidationFailed as exc:
            for field, problems in (exc.details or {}).items():
                target = field if field in self.fields else None
                for problem in problems:
                    self.add_error(target, problem)
        finally:
            server.credential_encrypted = stored
        return cleaned


@admin.register(McpServer)
class McpServerAdmin(admin.ModelAdmin):
    form = McpServerAdminForm
    list_display = (
        "name",
        "transport",
        "endpoint",
        "owner",
        "enabled",
        "credential_status",
        "tool_count",
        "tools_fetched_at",
        "problem",
    )
    list_filter = ("transport", "enabled", ("owner", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "description", "url", "command", "owner__username")
    autocomplete_fields = ("owner",)
    readonly_fields = ("id", "credential_status", "tool_list", "tools_fetched_at", "last_error", "created_at")
    actions = ("test_servers", "refresh_tools")
    fieldsets = (
        (None, {"fields": ("id", "name", "description", "owner", "enabled")}),
        ("Where", {"fields": ("transport", "url", "command", "args")}),
        (
            "Credential",
            {
                "fields": (
                    "credential_status",
                    "credential_header",
                    "credential",
                    "clear_credential",
                    "credential_env",
                    "per_user_credentials",
                )
            },
        ),
        ("Tools", {"fields": ("tool_list", "tools_fetched_at", "last_error", "created_at")}),
    )

    @admin.display(description="endpoint")
    def endpoint(self, obj: McpServer) -> str:
        return obj.url if obj.transport == McpTransport.HTTP else " ".join([obj.command, *obj.args])

    @admin.display(description="credential")
    def credential_status(self, obj: McpServer) -> str:
        parts = []
        if obj.credential_encrypted:
            parts.append("stored (encrypted)")
        if obj.credential_env:
            parts.append(f"from {obj.credential_env}")
        if obj.per_user_credentials:
            parts.append("each user's own")
        return ", ".join(parts) or "none"

    @admin.display(description="tools")
    def tool_count(self, obj: McpServer) -> int:
        return len(obj.tools_cache or [])

    @admin.display(description="last error")
    def problem(self, obj: McpServer) -> str:
        return obj.last_error[:120]

    @admin.display(description="tools offered")
    def tool_list(self, obj: McpServer) -> str:
        tools = obj.tools_cache or []
        if not tools:
            return "None fetched yet: use the Test action."
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "", "<li><code>{}</code>: {}</li>", ((t["name"], t.get("description", "")) for t in tools)
            ),
        )

    def save_model(self, request, obj: McpServer, form, change) -> None:
        if form.cleaned_data.get("clear_credential"):
            obj.credential_encrypted = ""
        elif form.cleaned_data.get("credential"):
            obj.credential_encrypted = credential_encrypt(form.cleaned_data["credential"])
        super().save_model(request, obj, form, change)
        if obj.enabled:
            self._test(request, obj)  # the tool list is fetched on save

    def _test(self, request, server: McpServer) -> None:
        try:
            tools = mcp_refresh_tools_blocking(server, user_id=request.user.pk)
        except Exception as exc:
            self.message_user(
                request, f"MCP server {server}: failed: {describe_failure(exc)}", messages.ERROR
            )
            return
        names = ", ".join(t["name"] for t in tools[:20]) or "none"
        self.message_user(
            request, f"MCP server {server}: connected; {len(tools)} tool(s): {names}.", messages.SUCCESS
        )

    @admin.action(description="Test: connect and list the tools of selected servers")
    def test_servers(self, request, queryset):
        for server in queryset[:20]:
            self._test(request, server)

    @admin.action(description="Refresh the cached tool lists of selected servers")
    def refresh_tools(self, request, queryset):
        for server in queryset[:20]:
            self._test(request, server)


class McpUserCredentialAdminForm(forms.ModelForm):
    credential = forms.CharField(
        required=True,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="The user's own credential (the header's whole value). Write-only, stored encrypted.",
    )

    class Meta:
        model = McpUserCredential
        fields = ("server", "user")


@admin.register(McpUserCredential)
class McpUserCredentialAdmin(admin.ModelAdmin):
    form = McpUserCredentialAdminForm
    list_display = ("server", "user", "updated_at")
    autocomplete_fields = ("user",)
    list_select_related = ("server", "user")

    def save_model(self, request, obj: McpUserCredential, form, change) -> None:
        obj.credential_encrypted = credential_encrypt(form.cleaned_data["credential"])
        super().save_model(request, obj, form, change)
