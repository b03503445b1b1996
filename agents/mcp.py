"""MCP servers, the domain side: who may register and use which server, their credentials
(encrypted), and the entries agents list them by. The client that talks to a server is
``agents.tools.mcp``. See docs/mcp.md.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet

from agents.models import McpServer, McpTransport, McpUserCredential
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed, parse_uuid
from core.secrets import decrypt_text, encrypt_text

_PURPOSE = "mcp-credential"
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
MAX_TOOL_NAME = 128


class McpCredentialMissing(Exception):
    """A call needs a credential nobody set (the server's, or the user's own)."""


# --- credentials ---------------------------------------------------------------------------------


def _secret_keys() -> list[str]:
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


def credential_encrypt(value: str) -> str:
    return encrypt_text(value, secret_keys=_secret_keys(), purpose=_PURPOSE)


def credential_decrypt(token: str) -> str:
    """Raises SecretUnreadable when the secret key changed with no fallback."""
    return decrypt_text(token, secret_keys=_secret_keys(), purpose=_PURPOSE)


def _credential_value_check(value: str) -> str:
    value = value.strip()
    # An HTTP header's value: printable ASCII (what every server and client takes), one line.
    if not value or len(value) > 8000 or any(not 32 <= ord(ch) <= 126 for ch in value):
        raise ValidationFailed(
            "Invalid credential.",
            details={"credential": ["One line of printable ASCII, at most 8000 characters."]},
        )
    return value


def mcp_server_set_credential(*, server: McpServer, value: str | None) -> McpServer:
    """Store the server's credential (the header's whole value, e.g. ``Bearer abc``) encrypted;
    None or "" clears it."""
    server.credential_encrypted = credential_encrypt(_credential_value_check(value)) if value else ""
    server.save(update_fields=["credential_encrypted", "updated_at"])
    return server


def mcp_user_credential_set(*, server: McpServer, user: Any, value: str | None) -> None:
    """A user's own credential for a per-user server; None or "" deletes it."""
    if not value:
        McpUserCredential.objects.filter(server=server, user=user).delete()
        return
    token = credential_encrypt(_credential_value_check(value))
    McpUserCredential.objects.update_or_create(
        server=server, user=user, defaults={"credential_encrypted": token}
    )


def mcp_credential_for(server: McpServer, user_id: int | None) -> str | None:
    """The header value a call for ``user_id`` carries: the user's own on a per-user server (the
    server's own when the user has none and the server has one), else the server's (stored or
    from its MCP_* variable); None when the server has none. McpCredentialMissing when a
    per-user server has neither; SecretUnreadable when a stored one cannot be opened."""
    if server.per_user_credentials and user_id is not None:
        row = McpUserCredential.objects.filter(server=server, user_id=user_id).first()
        if row is not None:
            return credential_decrypt(row.credential_encrypted)
    if server.credential_encrypted:
        return credential_decrypt(server.credential_encrypted)
    if server.credential_env:
        value = settings.NEXUS_MCP_ENV_CREDENTIALS.get(server.credential_env)
        if not value:
            raise McpCredentialMissing(f"{server.credential_env} is not set")
        return value
    if server.per_user_credentials:
        raise McpCredentialMissing("no credential of the user's own")
    return None


# --- validation ------------------------------------------------------------------------------------


def mcp_server_validate(server: McpServer, *, by_staff: bool) -> None:
    """The rules of a server's fields (ValidationFailed naming the field), and who may set them:
    a stdio server, and a shared one, only staff; a user's own only where the operator allows."""
    problems: dict[str, list[str]] = {}
    if not by_staff:
        if not settings.NEXUS_MCP_USER_SERVERS:
            raise Forbidden("Only the operator registers MCP servers here (NEXUS_MCP_USER_SERVERS is off).")
        if server.owner_id is None:
            raise Forbidden("Only staff register shared MCP servers.")
        if server.transport == McpTransport.STDIO:
            raise Forbidden("Only the operator registers stdio MCP servers: they run on this machine.")
    if not _FUNCTION_NAME.match(server.name or "") or len(server.name) > 32:
        problems["name"] = ["Letters, digits, _ and -, starting with a letter or _, at most 32."]
    if server.transport == McpTransport.HTTP:
        parts = urlsplit(server.url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems["url"] = ["A Streamable HTTP server needs an http(s) URL."]
        elif parts.username or parts.password:
            problems["url"] = ["No credentials in the URL: use the credential field."]
        if server.command or server.args:
            problems["command"] = ["Only a stdio server has a command."]
    elif server.transport == McpTransport.STDIO:
        if not (server.command or "").strip():
            problems["command"] = ["A stdio server needs a command."]
        if server.url:
            problems["url"] = ["A stdio server has no URL."]
    else:
        problems["transport"] = ["http or stdio."]
    if not isinstance(server.args, list) or not all(isinstance(a, str) for a in server.args):
        problems["args"] = ["A list of strings."]
    if server.credential_header and not _HEADER_NAME.match(server.credential_header):
        problems["credential_header"] = ["An HTTP header name."]
    if server.credential_env and not re.fullmatch(r"MCP_[A-Z0-9_]{1,96}", server.credential_env):
        problems["credential_env"] = ["The NAME of an environment variable starting with MCP_."]
    if server.credential_env and server.credential_encrypted:
        problems["credential_env"] = ["Either a stored credential or a variable, not both."]
    if problems:
        raise ValidationFailed("Invalid MCP server.", details=problems)


# --- writes ----------------------------------------------------------------------------------------

_SERVER_FIELDS = frozenset(
    {
        "name",
        "description",
        "transport",
        "url",
        "command",
        "args",
        "credential_header",
        "credential_env",
        "per_user_credentials",
        "enabled",
    }
)


def _unknown_fields_check(fields: dict[str, Any]) -> None:
    unknown = sorted(set(fields) - _SERVER_FIELDS)
    if unknown:
        raise ValidationFailed("Unknown fields.", details={name: ["Unknown field."] for name in unknown})


@transaction.atomic
def mcp_server_create(
    *, owner: Any, by_staff: bool, credential: str | None = None, **fields: Any
) -> McpServer:
    """Register a server (owner None: shared). ``credential``: the header's value, stored
    encrypted. Its tool list is fetched by the caller (``agents.tools.mcp.mcp_refresh_tools``)
    or by the first run that needs it."""
    _unknown_fields_check(fields)
    server = McpServer(owner=owner, **fields)
    if credential:
        server.credential_encrypted = credential_encrypt(_credential_value_check(credential))
    mcp_server_validate(server, by_staff=by_staff)
    server.save()
    return server


@transaction.atomic
def mcp_server_update(
    *, server: McpServer, by_staff: bool, credential: str | None = None, **fields: Any
) -> McpServer:
    """Change a server; ``credential`` None keeps the stored one, "" clears it. A changed
    endpoint drops the cached tool list (fetched again on next use)."""
    _unknown_fields_check(fields)
    moved = any(
        fields.get(k, getattr(server, k)) != getattr(server, k)
        for k in ("url", "command", "args", "transport")
    )
    for key, value in fields.items():
        setattr(server, key, value)
    if credential is not None:
        server.credential_encrypted = (
            credential_encrypt(_credential_value_check(credential)) if credential else ""
        )
    if moved:
        server.tools_cache, server.tools_fetched_at = [], None
    mcp_server_validate(server, by_staff=by_staff)
    server.save()
    return server


# --- who may use which server ----------------------------------------------------------------------


def mcp_servers_usable_by(owner_id: int | None) -> QuerySet[McpServer]:
    """Servers an agent of ``owner_id`` may list: the shared ones and, for a user's agent, that
    user's own. A shared agent (owner None) uses shared servers only."""
    condition = Q(owner__isnull=True)
    if owner_id is not None:
        condition |= Q(owner_id=owner_id)
    return McpServer.objects.filter(condition)


def mcp_function_name(server_name: str, tool: str) -> str:
    """The name the model sees for ``tool`` of ``server_name``: ``<server>__<tool>``, with
    characters providers refuse replaced by ``_``; a name past 64 characters is cut and ends in a
    short hash of the whole, so two long names stay apart."""
    name = _UNSAFE.sub("_", f"{server_name}__{tool}")
    if not name[0].isalpha() and name[0] != "_":
        name = "_" + name
    if len(name) > 64:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:55]}_{digest}"
    return name


def mcp_tool_entry_clean(spec: dict[str, Any], where: str) -> dict[str, Any]:
    """An ``Agent.tools`` entry for an MCP tool: ``{"execution": "mcp", "server": "<id>", "tool":
    "<the server's tool name>"}``, with an optional ``name`` (what the model sees; default
    ``<server name>__<tool>``, filled in by ``mcp_tool_refs_resolve``). Its description and
    parameters come from the server's tool list at run time."""
    try:
        server_id = str(uuid.UUID(str(spec.get("server"))))
    except ValueError:
        raise ValidationFailed(
            "Invalid MCP tool entry.", details={where: ["server is the id of an MCP server."]}
        ) from None
    tool = spec.get("tool")
    if not isinstance(tool, str) or not tool.strip() or len(tool) > MAX_TOOL_NAME:
        raise ValidationFailed(
            "Invalid MCP tool entry.", details={where: ["tool is the name of one of the server's tools."]}
        )
    name = spec.get("name")
    if name is not None and (not isinstance(name, str) or not _FUNCTION_NAME.match(name)):
        raise ValidationFailed("Invalid tool name.", details={where: ["name must be an identifier."]})
    return {"name": name, "execution": "mcp", "server": server_id, "tool": tool}


def mcp_tool_refs_resolve(tools: list[dict[str, Any]], *, owner_id: int | None) -> list[dict[str, Any]]:
    """Check every MCP entry of ``tools`` names a server an agent of ``owner_id`` may use (else
    ValidationFailed, the same answer for a server that does not exist: no leak), fill in its
    default name, and refuse two entries with one name."""
    wanted = {t["server"] for t in tools if t.get("execution") == "mcp"}
    if not wanted:
        return tools
    servers = {str(s.pk): s for s in mcp_servers_usable_by(owner_id).filter(pk__in=wanted)}
    seen: set[str] = {t["name"] for t in tools if t.get("execution") != "mcp"}
    out = []
    for index, spec in enumerate(tools):
        if spec.get("execution") != "mcp":
            out.append(spec)
            continue
        where = f"tools[{index}]"
        server = servers.get(spec["server"])
        if server is None:
            raise ValidationFailed(
                "Unknown MCP server.",
                details={where: ["No MCP server with this id that this agent may use."]},
            )
        name = spec.get("name") or mcp_function_name(server.name, spec["tool"])
        if name in seen:
            raise ValidationFailed("Duplicate tool name.", details={where: [f"{name} is listed twice."]})
        seen.add(name)
        out.append({**spec, "name": name})
    return out


# --- reads for users --------------------------------------------------------------------------------


def mcp_server_queryset_for_user(user: Any) -> QuerySet[McpServer]:
    """Servers a user may see and list in their agents: the shared ones and their own (staff: all)."""
    qs = McpServer.objects.order_by("name", "created_at")
    if getattr(user, "is_staff", False):
        return qs
    if not getattr(user, "is_authenticated", False):
        return qs.none()
    return qs.filter(Q(owner__isnull=True) | Q(owner=user))


def mcp_server_get_for_user(*, user: Any, server_id: Any) -> McpServer:
    """The server if the user may see it; otherwise NotFound (never a leak of existence)."""
    try:
        return mcp_server_queryset_for_user(user).get(pk=parse_uuid(server_id, what="MCP server"))
    except McpServer.DoesNotExist:
        raise NotFound("MCP server not found.") from None


def mcp_user_credential_set_for_user(*, user: Any, server: McpServer, value: str | None) -> None:
    """A user sets (or, with None, removes) their own credential for a server they may use that
    takes each user's own."""
    if not server.per_user_credentials:
        raise Conflict("This MCP server does not take a credential of each user's own.")
    mcp_user_credential_set(server=server, user=user, value=value)


def mcp_user_has_credential(*, user: Any, server: McpServer) -> bool:
    return McpUserCredential.objects.filter(server=server, user=user).exists()


def mcp_server_create_for_user(*, user: Any, shared: bool = False, **fields: Any) -> McpServer:
    """A user registers a Streamable HTTP server: their own, or (staff) a shared one."""
    by_staff = bool(getattr(user, "is_staff", False))
    if shared and not by_staff:
        raise Forbidden("Only staff register shared MCP servers.")
    if fields.get("transport", McpTransport.HTTP) != McpTransport.HTTP:
        raise Forbidden("stdio servers are registered by the operator, in the admin.")
    owner = None if shared else user
    if McpServer.objects.filter(owner=owner, name=fields.get("name")).exists():
        raise Conflict("An MCP server with this name exists already.")
    return mcp_server_create(owner=owner, by_staff=by_staff, **fields)


def mcp_server_can_edit(*, user: Any, server: McpServer) -> bool:
    if getattr(user, "is_staff", False):
        return True
    return server.owner_id is not None and server.owner_id == getattr(user, "pk", None)


def mcp_server_update_for_user(*, user: Any, server: McpServer, **fields: Any) -> McpServer:
    if not mcp_server_can_edit(user=user, server=server):
        raise Forbidden("Only staff change shared MCP servers.")
    name = fields.get("name")
    if name and name != server.name and McpServer.objects.filter(owner=server.owner, name=name).exists():
        raise Conflict("An MCP server with this name exists already.")
    return mcp_server_update(server=server, by_staff=bool(getattr(user, "is_staff", False)), **fields)


def mcp_server_delete_for_user(*, user: Any, server: McpServer) -> None:
    """Delete a server the user may edit; agents that list its tools keep the entries, which
    offer nothing any more (left out of their runs)."""
    if not mcp_server_can_edit(user=user, server=server):
        raise Forbidden("Only staff delete shared MCP servers.")
    server.delete()
