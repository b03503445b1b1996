"""Agent shapes of the REST API. Input serializers check types and sizes; the rules (known provider,
no secrets in config, valid tool specs, who may write) live in agents.services."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.avatars import validate_colour, validate_emoji
from agents.models import AGENT_EDITABLE_FIELDS, Agent, AgentStatus, KnowledgeMode
from agents.selectors import agent_can_edit
from core.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictSlugField,
)


@extend_schema_field({"type": "string", "maxLength": 500, "description": "An http(s) URL, or empty."})
class UrlOrBlankField(serializers.URLField):
    """A URL or "" (OpenAPI's ``format: uri`` does not allow the empty string)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 500)
        kwargs.setdefault("allow_blank", True)
        super().__init__(**kwargs)


class ToolSpecSerializer(serializers.Serializer):
    """A tool the agent lists: a server or client tool (name, description, parameters), or a tool
    of an MCP server (execution ``mcp``, ``server`` and ``tool``; ``name`` optional; docs/mcp.md)."""

    name = serializers.RegexField(
        r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$",
        max_length=64,
        required=False,
        help_text="What the model calls it. Required, except for an MCP tool (default <server>__<tool>).",
    )
    description = StrictCharField(required=False, allow_blank=True, max_length=4000, default="")
    parameters = serializers.DictField(
        required=False, help_text="A JSON Schema object describing the arguments."
    )
    approval = serializers.ChoiceField(
        choices=["always", "never", "ask"],
        required=False,
        help_text="Server tools: always ask a person, never, or ask unless an allow rule matches.",
    )
    allow = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField(max_length=500)),
        required=False,
        max_length=50,
        help_text="Rules ({argument: pattern}) under which an `ask` tool runs without asking.",
    )
    deny = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField(max_length=500)),
        required=False,
        max_length=50,
        help_text="Rules ({argument: pattern}) under which the tool is refused without asking.",
    )
    execution = serializers.ChoiceField(choices=["server", "client", "mcp"], required=False, default="server")
    server = serializers.UUIDField(required=False, help_text="MCP only: the MCP server's id.")
    tool = StrictCharField(
        required=False, max_length=128, help_text="MCP only: the server's name for the tool."
    )

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if value.get("execution") == "mcp":
            value.pop("description", None)  # an MCP tool's description and parameters are the server's
            value.pop("parameters", None)
            if "server" in value:
                value["server"] = str(value["server"])
        elif "name" not in value:
            raise serializers.ValidationError({"name": ["This field is required."]})
        return value


class AgentSerializer(serializers.ModelSerializer):
    """An agent as clients see it. ``config`` never holds secrets (they are refused on write)."""

    owner_id = serializers.IntegerField(read_only=True, allow_null=True, help_text="Null: shared.")
    shared = serializers.BooleanField(source="is_shared", read_only=True)
    can_edit = serializers.SerializerMethodField()
    tools = ToolSpecSerializer(many=True, read_only=True)
    capabilities = serializers.ListField(child=serializers.CharField(), read_only=True)
    interaction_modes = serializers.ListField(child=serializers.CharField(), read_only=True)
    config = serializers.DictField(read_only=True)
    knowledge_bases = serializers.ListField(child=serializers.UUIDField(), read_only=True)
    base_url = UrlOrBlankField(read_only=True)
    colour = serializers.CharField(
        source="avatar_colour", read_only=True, help_text="The avatar's colour, #rrggbb."
    )

    class Meta:
        model = Agent
        fields = (
            "id",
            "owner_id",
            "shared",
            "can_edit",
            *AGENT_EDITABLE_FIELDS,
            "cooldown_until",
            "last_active_at",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields

    def get_can_edit(self, agent: Agent) -> bool:
        request = self.context.get("request")
        return request is not None and agent_can_edit(user=request.user, agent=agent)


def _strings(max_items: int = 50) -> serializers.ListField:
    return serializers.ListField(child=StrictCharField(max_length=100), required=False, max_length=max_items)


class AgentWriteSerializer(serializers.Serializer):
    """Create (POST), replace (PUT) or change (PATCH) an agent: one field per
    ``AGENT_EDITABLE_FIELDS`` entry, each with its checks."""

    name = StrictCharField(max_length=120)
    emoji = StrictCharField(
        max_length=16,
        required=False,
        allow_blank=True,
        validators=[validate_emoji],
        help_text="The avatar: one emoji (one grapheme, e.g. 👩‍💻 or 🇫🇷), or empty.",
    )
    colour = StrictCharField(
        max_length=7,
        required=False,
        allow_blank=True,
        validators=[validate_colour],
        help_text="The avatar's colour, #rrggbb. Empty: one derived from the agent's id.",
    )
    description = StrictCharField(max_length=4000, required=False, allow_blank=True)
    workspace = StrictSlugField(max_length=64, required=False)
    provider = StrictCharField(
        max_length=32, required=False, help_text="A registered provider: local, ollama, openai, gemini."
    )
    model = StrictCharField(max_length=200)
    base_url = UrlOrBlankField(required=False)
    system_prompt = StrictCharField(max_length=100_000, required=False, allow_blank=True)
    personality = StrictCharField(max_length=4000, required=False, allow_blank=True)
    capabilities = _strings()
    interaction_modes = _strings()
    temperature = StrictFloatField(min_value=0.0, max_value=2.0, required=False, allow_null=True)
    max_tokens = StrictIntegerField(min_value=1, max_value=1_000_000, required=False, allow_null=True)
    context_window = StrictIntegerField(
        min_value=256,
        max_value=10_000_000,
        required=False,
        allow_null=True,
        help_text="Tokens the model reads at once; empty: the provider's default.",
    )
    tools = ToolSpecSerializer(many=True, required=False)
    knowledge_bases = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        max_length=20,
        help_text="Ids of knowledge bases the agent searches; the owner must be able to read them.",
    )
    knowledge_mode = serializers.ChoiceField(
        choices=KnowledgeMode.choices,
        required=False,
        help_text="tool: the model calls knowledge_search; retrieve: passages go in the prompt; off.",
    )
    config = serializers.DictField(
        required=False,
        help_text="Provider options, e.g. api_key_env (the NAME of a *_API_KEY variable). Never secrets.",
    )
    status = serializers.ChoiceField(choices=AgentStatus.choices, required=False)

    def to_service_fields(self) -> dict[str, Any]:
        fields = dict(self.validated_data)
        fields.pop("shared", None)
        if "tools" in fields:
            fields["tools"] = [dict(tool) for tool in fields["tools"]]
        if "knowledge_bases" in fields:
            fields["knowledge_bases"] = [str(base_id) for base_id in fields["knowledge_bases"]]
        return fields


class AgentCreateSerializer(AgentWriteSerializer):
    shared = StrictBooleanField(
        required=False, default=False, help_text="Shared with everyone (owner null). Staff only."
    )


class AgentFilterSerializer(serializers.Serializer):
    """Query filters; an empty value means no filter."""

    status = serializers.ChoiceField(choices=AgentStatus.choices, required=False, allow_blank=True)
    workspace = serializers.CharField(max_length=64, required=False, allow_blank=True)
    provider = serializers.CharField(max_length=32, required=False, allow_blank=True)


class AgentStatusMetadataSerializer(serializers.Serializer):
    provider = serializers.CharField()
    model = serializers.CharField()
    cooldown_until = serializers.DateTimeField(allow_null=True)
    active_conversations = serializers.IntegerField()


class AgentStatusSerializer(serializers.Serializer):
    """Seed 001 AgentStatus."""

    agent_id = serializers.UUIDField()
    agent_type = serializers.CharField(help_text="The provider.")
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=AgentStatus.choices)
    last_active = serializers.DateTimeField(allow_null=True)
    capabilities = serializers.ListField(child=serializers.CharField())
    interaction_modes = serializers.ListField(child=serializers.CharField())
    owner_id = serializers.IntegerField(allow_null=True)
    is_running = serializers.BooleanField()
    message_count = serializers.IntegerField()
    metadata = AgentStatusMetadataSerializer()


class ProviderStatusSerializer(serializers.Serializer):
    name = serializers.CharField()
    reachable = serializers.BooleanField()
    models = serializers.ListField(child=serializers.CharField())
    detail = serializers.CharField(allow_blank=True)
    latency_ms = serializers.FloatField(allow_null=True, help_text="How long the check took.")


# --- MCP servers (docs/mcp.md) ------------------------------------------------------------------


class McpToolSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The server's name for the tool (an agent's entry: tool).")
    function_name = serializers.CharField(help_text="What the model sees by default: <server>__<tool>.")
    description = serializers.CharField(allow_blank=True)
    parameters = serializers.DictField(help_text="Its JSON Schema, as the server describes it.")


class McpServerSerializer(serializers.Serializer):
    """An MCP server as users see it: never a credential; its URL and last error only to its
    owner (a user's own server) and to staff."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    owner_id = serializers.IntegerField(allow_null=True, help_text="Null: registered by the operator.")
    shared = serializers.BooleanField()
    transport = serializers.ChoiceField(choices=["http", "stdio"])
    url = serializers.CharField(allow_null=True, help_text="Null unless it is yours (or you are staff).")
    enabled = serializers.BooleanField()
    per_user_credentials = serializers.BooleanField(
        help_text="Calls carry each user's own credential: set yours with PUT .../credential/."
    )
    has_my_credential = serializers.BooleanField()
    tools = McpToolSerializer(many=True)
    tools_fetched_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(
        allow_null=True, help_text="Null unless it is yours (or you are staff)."
    )


class McpCredentialSerializer(serializers.Serializer):
    credential = StrictCharField(
        max_length=8000,
        help_text="The header's whole value, e.g. Bearer abc123. Write-only, stored encrypted.",
    )


MCP_URL_PATTERN = r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[!-~]*)?$"


class McpServerWriteSerializer(serializers.Serializer):
    """Register (POST) or change (PATCH) an MCP server over REST: a user's own where the operator
    allows it (NEXUS_MCP_USER_SERVERS; Streamable HTTP only), or a shared one (staff)."""

    name = serializers.RegexField(
        r"^[A-Za-z_][A-Za-z0-9_\-]{0,31}$",
        max_length=32,
        help_text="Letters, digits, _ and -: the model sees each tool as <name>__<tool>.",
    )
    description = StrictCharField(max_length=4000, required=False, allow_blank=True)
    url = serializers.RegexField(
        MCP_URL_PATTERN,
        max_length=500,
        help_text="The Streamable HTTP endpoint, http(s).",
    )
    credential_header = serializers.RegexField(
        r"^[A-Za-z0-9!#$%&'*+.^_`|~\-]{1,100}$",
        max_length=100,
        required=False,
        help_text="Default Authorization.",
    )
    credential = serializers.RegexField(
        r"^[ -~]*$",
        max_length=8000,
        required=False,
        allow_blank=True,
        write_only=True,
        help_text="The header's whole value, e.g. Bearer abc123. Write-only, stored encrypted; empty clears it.",
    )
    per_user_credentials = StrictBooleanField(required=False)
    enabled = StrictBooleanField(required=False)
    shared = StrictBooleanField(required=False, default=False, help_text="Staff only: for every agent.")


class McpRefreshSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    error = serializers.CharField(allow_blank=True, help_text="Why the tool list could not be fetched.")
    server = McpServerSerializer()
