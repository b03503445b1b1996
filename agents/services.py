"""Writes of agents. Views, consumers and the admin all call these."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction

from agents.avatars import default_colour
from agents.knowledge import knowledge_bases_validate
from agents.mcp import mcp_tool_entry_clean, mcp_tool_refs_resolve
from agents.models import AGENT_EDITABLE_FIELDS, Agent, AgentStatus
from agents.preferences import allowed_models_validate
from agents.provider_config import TIMEOUT_NAMES, timeout_value_ok
from agents.selectors import agent_can_edit
from core.errors import Conflict, Forbidden, ValidationFailed
from providers.registry import registry

_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
_SECRET_HINTS = ("api_key", "apikey", "secret", "password", "token")


def tool_specs_validate(tools: Any) -> list[dict[str, Any]]:
    """Check a list of tool specs: name, description, JSON Schema parameters, execution; or an MCP
    server's tool (``agents.mcp.mcp_tool_entry_clean``)."""
    if not isinstance(tools, list):
        raise ValidationFailed("tools must be a list.", details={"tools": ["Expected a list of tool specs."]})
    seen: set[str] = set()
    cleaned = []
    for index, spec in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(spec, dict):
            raise ValidationFailed("Invalid tool spec.", details={where: ["Expected an object."]})
        if spec.get("execution") == "mcp":
            # A tool of an MCP server; its server is checked against the agent's owner on save. It
            # runs on the server side, so it may ask for approval as a server tool does.
            entry = mcp_tool_entry_clean(spec, where)
            entry.update(_approval_validate(spec, "server", where))
            cleaned.append(entry)
            continue
        name = spec.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise ValidationFailed("Invalid tool name.", details={where: ["name must be an identifier."]})
        if name in seen:
            raise ValidationFailed("Duplicate tool name.", details={where: [f"{name} is listed twice."]})
        seen.add(name)
        parameters = spec.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise ValidationFailed(
                "Invalid tool parameters.", details={where: ["parameters must be a JSON Schema object."]}
            )
        execution = spec.get("execution", "server")
        if execution not in {"server", "client"}:
            raise ValidationFailed(
                "Invalid tool execution.", details={where: ["execution is server, client or mcp."]}
            )
        entry = {
            "name": name,
            "description": str(spec.get("description", "")),
            "parameters": parameters,
            "execution": execution,
        }
        entry.update(_approval_validate(spec, execution, where))
        cleaned.append(entry)
    return cleaned


APPROVAL_MODES = ("always", "never", "ask")
_MAX_RULES = 50


def _approval_validate(spec: dict[str, Any], execution: str, where: str) -> dict[str, Any]:
    """A tool entry's approval policy (docs/tools.md, "Approvals"): ``approval`` (always, never or
    ask) and ``allow`` / ``deny`` rules, each an object of argument name -> pattern. Server tools
    only: a client tool already waits for its client. Only the keys given are kept."""
    out: dict[str, Any] = {}
    if "approval" in spec:
        if spec["approval"] not in APPROVAL_MODES:
            raise ValidationFailed(
                "Invalid tool approval.", details={where: ["approval is always, never or ask."]}
            )
        out["approval"] = spec["approval"]
    for key in ("allow", "deny"):
        if key not in spec:
            continue
        rules = spec[key]
        if not isinstance(rules, list) or len(rules) > _MAX_RULES:
            raise ValidationFailed(
                f"Invalid tool {key} rules.",
                details={where: [f"{key} is a list of at most {_MAX_RULES} rules."]},
            )
        for rule in rules:
            if not isinstance(rule, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and len(v) <= 500 for k, v in rule.items()
            ):
                raise ValidationFailed(
                    f"Invalid tool {key} rule.",
                    details={
                        where: [
                            f'each {key} rule maps argument names to text patterns, e.g. {{"sql": "SELECT *"}}.'
                        ]
                    },
                )
        out[key] = rules
    if out and execution == "client":
        raise ValidationFailed(
            "Approval applies to server tools.",
            details={
                where: ["approval, allow and deny are for server tools; a client tool waits for its client."]
            },
        )
    return out


def _config_validate(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise ValidationFailed("config must be an object.", details={"config": ["Expected an object."]})
    for key, value in config.items():
        lowered = key.lower()
        # `api_key_env` names a variable; anything else that looks like a credential is refused.
        if lowered != "api_key_env" and any(hint in lowered for hint in _SECRET_HINTS):
            raise ValidationFailed(
                "Secrets are never stored in agents.",
                details={"config": [f"{key}: put the secret in the environment and set api_key_env."]},
            )
        if lowered == "api_key_env" and (not isinstance(value, str) or not value.endswith("_API_KEY")):
            raise ValidationFailed(
                "api_key_env names an environment variable ending in _API_KEY.",
                details={"config": ["api_key_env must name a variable like GROQ_API_KEY."]},
            )
    _timeouts_validate(config.get("timeouts"))
    try:
        allowed_models_validate(config.get("allowed_models"))
    except ValueError as exc:
        raise ValidationFailed(str(exc), details={"config": [str(exc)]}) from None
    return config


def _timeouts_validate(timeouts: Any) -> None:
    """``config.timeouts``: provider deadlines for this agent, each 0 < seconds <= the operator's
    ``NEXUS_MAX_AGENT_TIMEOUT_SECONDS``."""
    if timeouts is None:
        return
    problem = None
    if not isinstance(timeouts, dict):
        problem = "timeouts must be an object."
    elif unknown := sorted(set(timeouts) - set(TIMEOUT_NAMES)):
        problem = f"Unknown timeouts: {', '.join(unknown)}; use {', '.join(TIMEOUT_NAMES)}."
    elif not all(timeout_value_ok(value) for value in timeouts.values()):
        problem = (
            "Each timeout is a number of seconds above 0 and at most "
            f"{settings.NEXUS_MAX_AGENT_TIMEOUT_SECONDS:g}."
        )
    if problem:
        raise ValidationFailed(problem, details={"config": [problem]})


def storable_json_validate(value: Any, *, field: str) -> None:
    """Refuse a NUL character anywhere in a JSON value (keys included): PostgreSQL cannot store
    it in jsonb or text ("unsupported Unicode escape sequence"), so it is bad input, not a 500."""

    def has_nul(item: Any) -> bool:
        if isinstance(item, str):
            return "\x00" in item
        if isinstance(item, dict):
            return any(has_nul(key) or has_nul(val) for key, val in item.items())
        if isinstance(item, list | tuple):
            return any(has_nul(val) for val in item)
        return False

    if has_nul(value):
        raise ValidationFailed(
            "NUL characters are not allowed.", details={field: ["Contains a NUL character."]}
        )


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    for name, value in fields.items():
        storable_json_validate(value, field=name)
    unknown = set(fields) - set(AGENT_EDITABLE_FIELDS)
    if unknown:
        raise ValidationFailed(
            "Unknown fields.", details={name: ["Unknown field."] for name in sorted(unknown)}
        )
    if "tools" in fields:
        fields["tools"] = tool_specs_validate(fields["tools"])
    if "config" in fields:
        fields["config"] = _config_validate(fields["config"])
    for name in ("capabilities", "interaction_modes"):
        if name in fields and (
            not isinstance(fields[name], list) or not all(isinstance(v, str) for v in fields[name])
        ):
            raise ValidationFailed(
                f"{name} must be a list of strings.", details={name: ["Expected strings."]}
            )
    if "provider" in fields and fields["provider"] not in registry.names():
        raise ValidationFailed(
            "Unknown provider.", details={"provider": [f"One of {', '.join(sorted(registry.names()))}."]}
        )
    if isinstance(fields.get("colour"), str):
        fields["colour"] = fields["colour"].strip().lower()
    if "status" in fields and fields["status"] not in AgentStatus.values:
        raise ValidationFailed(
            "Invalid status.", details={"status": [f"One of {', '.join(AgentStatus.values)}."]}
        )
    return fields


def _full_clean(agent: Agent) -> None:
    try:
        agent.full_clean(exclude=["owner"])
    except DjangoValidationError as exc:
        raise ValidationFailed("Invalid agent.", details=exc.message_dict) from None


@transaction.atomic
def agent_create(*, owner: Any, **fields: Any) -> Agent:
    """Create an agent owned by ``owner`` (None: shared with everyone)."""
    fields = _clean(dict(fields))
    if "knowledge_bases" in fields:
        fields["knowledge_bases"] = knowledge_bases_validate(fields["knowledge_bases"], owner=owner)
    if "tools" in fields:
        fields["tools"] = mcp_tool_refs_resolve(fields["tools"], owner_id=getattr(owner, "pk", None))
    agent = Agent(owner=owner, **fields)
    if not agent.colour:
        agent.colour = default_colour(agent.id)  # agents look different from the start
    _full_clean(agent)
    agent.save()
    return agent


@transaction.atomic
def agent_update(*, agent: Agent, **fields: Any) -> Agent:
    fields = _clean(dict(fields))
    if "knowledge_bases" in fields:
        fields["knowledge_bases"] = knowledge_bases_validate(
            fields["knowledge_bases"], owner=agent.owner, current=agent.knowledge_bases
        )
    if "tools" in fields:
        fields["tools"] = mcp_tool_refs_resolve(fields["tools"], owner_id=agent.owner_id)
    for key, value in fields.items():
        setattr(agent, key, value)
    if not agent.colour:
        agent.colour = default_colour(agent.id)  # an emptied colour goes back to the derived one
    _full_clean(agent)
    agent.save()
    return agent


@transaction.atomic
def agent_delete(*, agent: Agent) -> None:
    agent.delete()


def agent_set_status(*, agent: Agent, status: str, cooldown_until: Any = None) -> Agent:
    if status not in AgentStatus.values:
        raise ValidationFailed(
            "Invalid status.", details={"status": [f"One of {', '.join(AgentStatus.values)}."]}
        )
    agent.status = status
    agent.cooldown_until = cooldown_until if status == AgentStatus.COOLDOWN else None
    agent.save(update_fields=["status", "cooldown_until", "updated_at"])
    return agent


# --- the access rules of writes, for callers acting for a user (REST, WebSocket) ----------------

# Provider options that would move the request elsewhere (google-genai's per-request http_options
# carry a base_url and headers): staff only, like base_url itself.
_ENDPOINT_CONFIG_KEYS = frozenset({"http_options", "base_url", "api_endpoint", "headers", "extra_headers"})
STAFF_ONLY_MESSAGE = (
    "Only staff set a custom base_url or config.api_key_env: they decide where the server connects "
    "and which of the operator's keys it sends."
)


def agent_endpoint_check(*, user: Any, fields: dict[str, Any], agent: Agent | None = None) -> None:
    """Refuse (403 ``forbidden``) a non-staff user's attempt to set where the agent connects
    (``base_url``) or which operator key it uses (``config.api_key_env``). Leaving either as it
    already is (e.g. a full PUT of an older agent) is not an attempt; clearing either is allowed."""
    if getattr(user, "is_staff", False):
        return
    refused: dict[str, list[str]] = {}
    current_url = agent.base_url if agent is not None else ""
    base_url = fields.get("base_url")
    if base_url and base_url != current_url:
        refused["base_url"] = ["Only staff set a custom base_url."]
    if "config" in fields:
        config = fields["config"] if isinstance(fields["config"], dict) else {}
        current_env = (agent.config or {}).get("api_key_env") if agent is not None else None
        key_env = next((v for k, v in config.items() if str(k).lower() == "api_key_env"), None)
        # A value that is no variable name at all is the validation's to refuse (400).
        if isinstance(key_env, str) and key_env.endswith("_API_KEY") and key_env != current_env:
            refused["config"] = ["Only staff set api_key_env."]
        current = (agent.config or {}) if agent is not None else {}
        moved = sorted(
            str(k)
            for k, v in config.items()
            if str(k).lower() in _ENDPOINT_CONFIG_KEYS and current.get(k) != v
        )
        if moved:
            refused.setdefault("config", []).append(f"Only staff set {', '.join(moved)}.")
    if refused:
        raise Forbidden(STAFF_ONLY_MESSAGE, details=refused)


def agent_create_for_user(*, user: Any, shared: bool = False, **fields: Any) -> Agent:
    """Create an agent for ``user``: their own, or shared with everyone (staff only)."""
    if shared and not getattr(user, "is_staff", False):
        raise Forbidden("Only staff create shared agents.")
    agent_endpoint_check(user=user, fields=fields)
    return agent_create(owner=None if shared else user, **fields)


def agent_update_for_user(*, user: Any, agent: Agent, **fields: Any) -> Agent:
    """Owners change their agents; shared agents are changed by staff only."""
    if not agent_can_edit(user=user, agent=agent):
        raise Forbidden("Only staff change shared agents.")
    agent_endpoint_check(user=user, fields=fields, agent=agent)
    return agent_update(agent=agent, **fields)


def agent_delete_for_user(*, user: Any, agent: Agent) -> None:
    """Delete an agent the user may edit. An agent that has spoken keeps the history readable:
    it is refused (409) and should be paused instead; delete its conversations first."""
    if not agent_can_edit(user=user, agent=agent):
        raise Forbidden("Only staff delete shared agents.")
    if agent.messages.exists():
        raise Conflict(
            "This agent has messages in conversations; pause it (status=paused) or delete those "
            "conversations first."
        )
    agent_delete(agent=agent)
