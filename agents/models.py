"""Agents: a provider + a model + instructions + tools (SPEC section 2)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from agents.avatars import default_colour, validate_colour, validate_emoji


class AgentStatus(models.TextChoices):
    ACTIVE = "active"
    PAUSED = "paused"
    ERROR = "error"
    COOLDOWN = "cooldown"


class Provider(models.TextChoices):
    LOCAL = "local"
    OLLAMA = "ollama"
    OPENAI = "openai"
    GEMINI = "gemini"


# The fields a client sets on an agent, in the order every listing shows them: the REST API
# (``AgentSerializer``, ``AgentWriteSerializer``), an inline agent in a conversation request
# (``conversations.services.INLINE_AGENT_FIELDS``), the admin's form and the demo presets all take
# theirs from here (tests/api/test_agent_fields.py holds the ones that must spell fields out).
AGENT_EDITABLE_FIELDS = (
    "name",
    "emoji",
    "colour",
    "description",
    "workspace",
    "provider",
    "model",
    "base_url",
    "system_prompt",
    "personality",
    "capabilities",
    "interaction_modes",
    "temperature",
    "max_tokens",
    "context_window",
    "tools",
    "knowledge_bases",
    "knowledge_mode",
    "config",
    "status",
)


class KnowledgeMode(models.TextChoices):
    """How an agent uses its knowledge bases (docs/knowledge.md, "Agents and sources")."""

    TOOL = "tool", "Tool: the model calls knowledge_search"
    RETRIEVE = "retrieve", "Retrieve: passages put in the prompt before each reply"
    OFF = "off", "Off"


class Agent(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="agents",
        help_text="Empty: shared with everyone.",
    )
    name = models.CharField(max_length=120)
    emoji = models.CharField(
        max_length=16, blank=True, default="🤖", validators=[validate_emoji], help_text="One emoji, or empty."
    )
    colour = models.CharField(
        max_length=7,
        blank=True,
        default="",
        validators=[validate_colour],
        help_text="The avatar's colour, #rrggbb. Empty: one derived from the agent's id.",
    )
    description = models.TextField(blank=True, default="")
    workspace = models.SlugField(max_length=64, default="default")
    provider = models.CharField(max_length=32, default=Provider.LOCAL)
    model = models.CharField(max_length=200)
    base_url = models.URLField(max_length=500, blank=True, default="")
    system_prompt = models.TextField(blank=True, default="")
    personality = models.TextField(blank=True, default="")
    capabilities = models.JSONField(default=list, blank=True)
    interaction_modes = models.JSONField(default=list, blank=True)
    temperature = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    max_tokens = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(1_000_000)]
    )
    context_window = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(256), MaxValueValidator(10_000_000)],
        help_text="Tokens the model reads at once (prompt and reply). Empty: the provider's default "
        "(local: the loaded context; see docs/providers.md).",
    )
    tools = models.JSONField(
        default=list, blank=True, help_text="Tool specs: name, description, parameters, execution."
    )
    knowledge_bases = models.JSONField(
        default=list,
        blank=True,
        help_text="Ids of the knowledge bases the agent searches (only those its user may read are).",
    )
    knowledge_mode = models.CharField(
        max_length=16, choices=KnowledgeMode.choices, default=KnowledgeMode.TOOL
    )
    config = models.JSONField(
        default=dict,
        blank=True,
        help_text="Provider-specific options, e.g. api_key_env (the NAME of the variable holding the key). Never secrets.",
    )
    status = models.CharField(max_length=16, choices=AgentStatus.choices, default=AgentStatus.ACTIVE)
    cooldown_until = models.DateTimeField(null=True, blank=True)
    last_active_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "created_at"]
        indexes = [
            models.Index(fields=["owner", "status"], name="agent_owner_status"),
            models.Index(fields=["workspace", "provider"], name="agent_workspace_provider"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=AgentStatus.values), name="agent_status_valid"
            ),
            models.CheckConstraint(condition=~models.Q(name=""), name="agent_name_not_empty"),
            models.CheckConstraint(condition=~models.Q(model=""), name="agent_model_not_empty"),
            models.CheckConstraint(
                condition=models.Q(temperature__isnull=True)
                | models.Q(temperature__gte=0.0, temperature__lte=2.0),
                name="agent_temperature_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.emoji} {self.name}".strip()

    @property
    def avatar_colour(self) -> str:
        """The colour of the agent's avatar: its own, or the one derived from its id."""
        return self.colour.lower() if self.colour else default_colour(self.id)

    @property
    def is_shared(self) -> bool:
        return self.owner_id is None


class ModelType(models.TextChoices):
    LLM = "llm"
    EMBEDDING = "embedding"


class ConnectStatus(models.TextChoices):
    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"
    DETECTING = "detecting"
    NOT_DETECTED = "not_detected"


class ModelEntry(models.Model):
    """A model in the registry (seed 002's model management, docs/dialects.md): one the operator
    (staff: shared, ``owner`` empty) or a user (their own) added beside the models the configured
    providers list. ``api_key_env`` is the NAME of the variable holding the key, never a key;
    ``base_url`` and ``api_key_env`` are set by staff only (SPEC section 12)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="model_entries",
        help_text="Empty: shared with everyone.",
    )
    model_name = models.CharField(max_length=200, help_text="The provider's name of the model.")
    display_name = models.CharField(max_length=200, blank=True, default="")
    provider = models.CharField(max_length=32, default=Provider.OPENAI)
    model_repo = models.CharField(max_length=200, blank=True, default="")
    model_type = models.CharField(max_length=16, choices=ModelType.choices, default=ModelType.LLM)
    base_url = models.URLField(max_length=500, blank=True, default="")
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        default="",
        validators=[
            RegexValidator(
                r"^[A-Z][A-Z0-9_]*_API_KEY$", "The NAME of a variable ending in _API_KEY (never a key)."
            )
        ],
        help_text="The NAME of the variable holding the key, e.g. GROQ_API_KEY. Never the key.",
    )
    connect_status = models.CharField(
        max_length=16, choices=ConnectStatus.choices, default=ConnectStatus.NOT_DETECTED
    )
    connect_detail = models.CharField(max_length=300, blank=True, default="")
    checked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_name", "created_at"]
        verbose_name = "model"
        constraints = [
            models.UniqueConstraint(fields=["owner", "model_name"], name="model_entry_one_name_per_owner"),
            models.UniqueConstraint(
                fields=["model_name"],
                condition=models.Q(owner__isnull=True),
                name="model_entry_one_shared_name",
            ),
            models.CheckConstraint(condition=~models.Q(model_name=""), name="model_entry_name_not_empty"),
        ]

    def __str__(self) -> str:
        return self.display_name or self.model_name

    @property
    def is_shared(self) -> bool:
        return self.owner_id is None


class UserConfig(models.Model):
    """What seed 002's ``/api/config/save_config`` keeps for a user: the app's face (name,
    description, icon), the chosen model of each kind (registry model names) and the knowledge
    selection. Never a secret: keys are named by variable on the models themselves."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="nexus_config"
    )
    app = models.JSONField(default=dict, blank=True)
    models_selected = models.JSONField(default=dict, blank=True)
    knowledge = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"config of {self.user_id}"


# --- MCP tool servers (SPEC sections 11 and 12; docs/mcp.md) ----------------------------------


class McpTransport(models.TextChoices):
    HTTP = "http", "Streamable HTTP"
    STDIO = "stdio", "stdio (a command the operator runs)"


class McpServer(models.Model):
    """An MCP server whose tools agents may list (``{"execution": "mcp", "server": id, "tool":
    name}`` in ``Agent.tools``). Registered by the operator (shared: owner empty), or by a user for
    their own agents where the operator allows it (``NEXUS_MCP_USER_SERVERS``). A stdio server is
    a command run on this machine: the operator's only. Credentials are stored encrypted
    (``agents.mcp``, Fernet keyed off SECRET_KEY), or named by an ``MCP_*`` environment variable; never shown."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="mcp_servers",
        help_text="Empty: registered by the operator, usable by every agent.",
    )
    name = models.SlugField(
        max_length=32,
        help_text="Letters, digits, _ and -. The model sees each tool as <name>__<tool>.",
    )
    description = models.TextField(blank=True, default="")
    transport = models.CharField(max_length=8, choices=McpTransport.choices, default=McpTransport.HTTP)
    url = models.URLField(max_length=500, blank=True, default="", help_text="Streamable HTTP endpoint.")
    command = models.CharField(
        max_length=500, blank=True, default="", help_text="stdio only: the program to run (operator only)."
    )
    args = models.JSONField(
        default=list, blank=True, help_text="stdio only: its arguments, a list of strings."
    )
    credential_header = models.CharField(
        max_length=100,
        blank=True,
        default="Authorization",
        help_text="The HTTP header that carries the credential (e.g. Authorization, X-Api-Key).",
    )
    credential_encrypted = models.TextField(blank=True, default="", editable=False)
    credential_env = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text="Or: the NAME of an MCP_* environment variable holding the header's value.",
    )
    per_user_credentials = models.BooleanField(
        default=False,
        help_text="Each user's calls carry that user's own credential (set per user) instead.",
    )
    enabled = models.BooleanField(default=True)
    tools_cache = models.JSONField(default=list, blank=True, editable=False)
    tools_fetched_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "created_at"]
        verbose_name = "MCP server"
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="mcp_server_owner_name_unique"),
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(owner__isnull=True), name="mcp_server_shared_name_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(transport__in=McpTransport.values), name="mcp_server_transport_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_shared(self) -> bool:
        return self.owner_id is None

    @property
    def has_credential(self) -> bool:
        return bool(self.credential_encrypted or self.credential_env)


class McpUserCredential(models.Model):
    """One user's own credential for an MCP server with ``per_user_credentials`` (encrypted)."""

    server = models.ForeignKey(McpServer, on_delete=models.CASCADE, related_name="user_credentials")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    credential_encrypted = models.TextField(editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "MCP user credential"
        constraints = [
            models.UniqueConstraint(fields=["server", "user"], name="mcp_user_credential_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.server} / {self.user}"
