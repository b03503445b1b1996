"""The MCP client: the tools of MCP servers, offered to agents like the built-in server tools.

Every call opens its own connection (Streamable HTTP through the egress policy, or the operator's
stdio command), calls one tool and closes it; cancelling the calling task (a person's stop)
cancels the call within ``_CANCEL_GRACE`` seconds: the ``mcp`` client sends the server
``notifications/cancelled`` (stdio) or aborts the request (HTTP), and the connection closes.
A server's tool list is cached on its row (``tools_cache``) and fetched again on save, on the
admin's test and refresh actions, and when a run finds it older than ``NEXUS_MCP_TOOLS_TTL``.
See docs/mcp.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx2
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from agents.mcp import McpCredentialMissing, mcp_credential_for, mcp_function_name, mcp_servers_usable_by
from agents.models import McpServer, McpTransport
from agents.tools.base import ToolContext, ToolError, ToolOutcome, error_outcome
from core.egress import EgressDenied, EgressPolicy, url_host_port
from core.secrets import SecretUnreadable

logger = logging.getLogger(__name__)

# After a cancelled call, how long its connection may take to close before it is left behind.
_CANCEL_GRACE = 0.5
# Characters of a tool's text result passed on (the stored result is capped again by runs.tools).
MAX_RESULT_CHARS = 100_000
MAX_TOOLS = 256
_MAX_DESCRIPTION = 4000


class McpUnavailable(Exception):
    """A server that cannot be used now; ``str()`` is safe to show to staff (no credential),
    ``public`` to the model and users (no host either)."""

    def __init__(self, detail: str, public: str) -> None:
        super().__init__(detail)
        self.public = public


# --- the egress policy -------------------------------------------------------------------------------

_policies: dict[tuple[Any, ...], EgressPolicy] = {}


def mcp_egress_policy() -> EgressPolicy:
    """Where MCP servers may be reached: public addresses and ``NEXUS_EGRESS_ALLOW``, nothing else
    (the providers' own URLs are not implicitly allowed here); the operator's provider keys are
    guarded as everywhere (``NEXUS_KEY_HOSTS``)."""
    identity = (
        tuple(settings.NEXUS_EGRESS_ALLOW),
        tuple(sorted((k, tuple(v)) for k, v in settings.NEXUS_KEY_HOSTS.items())),
        tuple(sorted(settings.NEXUS_PROVIDER_API_KEYS.items())),
    )
    policy = _policies.get(identity)
    if policy is None:
        if len(_policies) > 16:
            _policies.clear()
        policy = _policies[identity] = EgressPolicy.build(
            allow=settings.NEXUS_EGRESS_ALLOW,
            key_hosts=settings.NEXUS_KEY_HOSTS,
            keys=settings.NEXUS_PROVIDER_API_KEYS,
        )
    return policy


# --- connecting ----------------------------------------------------------------------------------------


def _unreachable(server: McpServer) -> str:
    return f"The MCP server {server.name!r} could not be reached."


def _credential(server: McpServer, user_id: int | None) -> str | None:
    try:
        return mcp_credential_for(server, user_id)
    except McpCredentialMissing as exc:
        public = (
            f"The MCP server {server.name!r} needs your own credential; none is set."
            if server.per_user_credentials
            else f"The MCP server {server.name!r} has no credential configured."
        )
        raise McpUnavailable(f"credential missing: {exc}", public) from None
    except SecretUnreadable:
        raise McpUnavailable(
            "the stored credential cannot be decrypted (SECRET_KEY changed?): enter it again",
            f"The MCP server {server.name!r} has no usable credential.",
        ) from None


@contextlib.asynccontextmanager
async def mcp_client(server: McpServer, *, credential: str | None) -> AsyncIterator[Any]:
    """A connected, initialised ``mcp.Client`` for ``server``. For HTTP, the URL's host is checked
    against the egress policy first (EgressDenied), and every connection (redirect hops within the
    endpoint's origin included) goes through the policy's transport."""
    from mcp import Client, StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client

    timeout = float(settings.NEXUS_MCP_CONNECT_TIMEOUT)
    if server.transport == McpTransport.STDIO:
        params = StdioServerParameters(command=server.command, args=list(server.args or []))
        async with Client(params, read_timeout_seconds=None) as client:
            yield client
        return
    policy = mcp_egress_policy()
    where = url_host_port(server.url)
    if where is None:
        raise McpUnavailable("the URL is not http(s)", _unreachable(server))
    await policy.resolve(*where)  # EgressDenied before any connection
    headers = {}
    if credential:
        headers[server.credential_header or "Authorization"] = credential
    http = httpx2.AsyncClient(
        transport=policy.transport2(),
        headers=headers,
        timeout=httpx2.Timeout(timeout, read=max(timeout, float(settings.NEXUS_TOOLS_TIMEOUT) + 5)),
        follow_redirects=False,
        trust_env=False,
    )
    async with http, Client(streamable_http_client(server.url, http_client=http)) as client:
        yield client


# --- tool lists -------------------------------------------------------------------------------------


def _tool_entry(tool: Any) -> dict[str, Any] | None:
    name = getattr(tool, "name", None)
    schema = getattr(tool, "input_schema", None) or {"type": "object", "properties": {}}
    if not isinstance(name, str) or not name or len(name) > 128:
        return None
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        return None
    return {
        "name": name,
        "description": str(getattr(tool, "description", "") or "")[:_MAX_DESCRIPTION],
        "parameters": {**schema, "type": "object"},
    }


async def _fetch_tools(server: McpServer, credential: str | None) -> list[dict[str, Any]]:
    timeout = float(settings.NEXUS_MCP_CONNECT_TIMEOUT) + float(settings.NEXUS_TOOLS_TIMEOUT)
    async with asyncio.timeout(timeout), mcp_client(server, credential=credential) as client:
        tools: list[dict[str, Any]] = []
        cursor = None
        while len(tools) < MAX_TOOLS:
            page = await client.list_tools(cursor=cursor)
            tools.extend(entry for entry in map(_tool_entry, page.tools) if entry is not None)
            cursor = getattr(page, "next_cursor", None)
            if not cursor:
                break
    return tools[:MAX_TOOLS]


async def mcp_list_tools(server: McpServer, *, user_id: int | None = None) -> list[dict[str, Any]]:
    """The server's tools now (name, description, parameters), asked over a fresh connection.
    Raises McpUnavailable, EgressDenied, or whatever the connection raised."""
    credential = await database_sync_to_async(_credential)(server, user_id)
    return await _fetch_tools(server, credential)


def _inner(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first ``kind`` inside it (anyio's task groups wrap errors in groups)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _inner(inner, kind)
            if found is not None:
                return found
    cause = exc.__cause__ or exc.__context__
    return _inner(cause, kind) if isinstance(cause, BaseException) and cause is not exc else None


def describe_failure(exc: BaseException) -> str:
    """A failure to reach or use a server, for staff (the admin, ``last_error``, the log): the
    reason and host, never a credential (the mcp and httpx errors do not carry headers)."""
    denied = _inner(exc, EgressDenied)
    if denied is not None:
        return f"refused by the egress policy: {denied}"
    if isinstance(exc, McpUnavailable):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, BaseExceptionGroup):
        first = exc.exceptions[0] if exc.exceptions else exc
        return describe_failure(first)
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def _save_tools(server_id: Any, tools: list[dict[str, Any]] | None, error: str) -> None:
    fields: dict[str, Any] = {"last_error": error[:2000]}
    if tools is not None:
        fields.update(tools_cache=tools, tools_fetched_at=timezone.now())
    McpServer.objects.filter(pk=server_id).update(**fields)


async def mcp_refresh_tools(server: McpServer, *, user_id: int | None = None) -> list[dict[str, Any]]:
    """Fetch the server's tool list and cache it on its row (``last_error`` cleared); on failure
    store ``last_error`` and raise."""
    try:
        tools = await mcp_list_tools(server, user_id=user_id)
    except Exception as exc:
        detail = describe_failure(exc)
        logger.warning("MCP server %s: the tool list could not be fetched: %s", server.name, detail)
        await database_sync_to_async(_save_tools)(server.pk, None, detail)
        raise
    await database_sync_to_async(_save_tools)(server.pk, tools, "")
    server.tools_cache, server.last_error = tools, ""
    return tools


def mcp_refresh_tools_blocking(server: McpServer, *, user_id: int | None = None) -> list[dict[str, Any]]:
    """``mcp_refresh_tools`` for synchronous code (the admin): the database work in the caller's
    thread, only the connection on an event loop."""
    try:
        credential = _credential(server, user_id)
        tools = async_to_sync(_fetch_tools)(server, credential)
    except Exception as exc:
        detail = describe_failure(exc)
        logger.warning("MCP server %s: the tool list could not be fetched: %s", server.name, detail)
        _save_tools(server.pk, None, detail)
        server.last_error = detail
        raise
    _save_tools(server.pk, tools, "")
    server.tools_cache, server.last_error = tools, ""
    return tools


# --- what a run offers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class McpBinding:
    """One MCP tool an agent lists, as a run offers it: ``name`` is what the model calls."""

    name: str
    server: McpServer
    tool: str
    description: str
    parameters: dict[str, Any]


def _servers_for(agent: Any, server_ids: set[str]) -> dict[str, McpServer]:
    rows = mcp_servers_usable_by(agent.owner_id).filter(pk__in=server_ids, enabled=True)
    return {str(s.pk): s for s in rows}


def _stale(server: McpServer) -> bool:
    if server.tools_fetched_at is None:
        return True
    return timezone.now() - server.tools_fetched_at > timedelta(seconds=float(settings.NEXUS_MCP_TOOLS_TTL))


async def mcp_bindings_for(agent: Any, user_id: int | None) -> dict[str, McpBinding]:
    """The MCP tools ``agent`` lists that a run can offer now, by the name the model sees. A
    server that is disabled, not usable by the agent's owner, or does not (any more) offer the
    tool leaves that tool out (logged). A tool list older than ``NEXUS_MCP_TOOLS_TTL`` is fetched
    again first; if that fails, the cached one is used."""
    entries = [t for t in (agent.tools or []) if t.get("execution") == "mcp"]
    if not entries:
        return {}
    servers = await database_sync_to_async(_servers_for)(agent, {str(t.get("server")) for t in entries})
    for server in servers.values():
        if _stale(server):
            with contextlib.suppress(Exception):  # logged and stored as last_error
                await mcp_refresh_tools(server, user_id=user_id)
    bindings: dict[str, McpBinding] = {}
    for entry in entries:
        server = servers.get(str(entry.get("server")))
        offered = {t["name"]: t for t in (server.tools_cache or [])} if server is not None else {}
        tool = offered.get(entry.get("tool"))
        if server is None or tool is None:
            logger.warning(
                "agent %s lists MCP tool %s of server %s, which is not available; left out",
                agent.pk,
                entry.get("name"),
                entry.get("server"),
            )
            continue
        name = entry.get("name") or mcp_function_name(server.name, tool["name"])
        bindings[name] = McpBinding(
            name=name,
            server=server,
            tool=tool["name"],
            description=tool.get("description", ""),
            parameters=tool.get("parameters") or {"type": "object", "properties": {}},
        )
    return bindings


# --- calling ------------------------------------------------------------------------------------------


def _content_text(block: Any) -> str:
    kind = getattr(block, "type", "")
    if kind == "text":
        return str(getattr(block, "text", ""))
    if kind == "resource":
        resource = getattr(block, "resource", None)
        text = getattr(resource, "text", None)
        return str(text) if text is not None else f"[resource {getattr(resource, 'uri', '')}]"
    if kind == "resource_link":
        return f"[resource {getattr(block, 'uri', '')}]"
    return f"[{kind or 'content'} {getattr(block, 'mime_type', '') or ''}]".replace(" ]", "]")


def result_outcome(result: Any) -> ToolOutcome:
    """A ``CallToolResult`` as a ToolOutcome: its text content joined (other content named), its
    structured content beside it; ``isError`` makes it an error outcome."""
    text = "\n".join(_content_text(block) for block in (getattr(result, "content", None) or []))
    if len(text) > MAX_RESULT_CHARS:
        text = text[: MAX_RESULT_CHARS - 1] + "…"
    if getattr(result, "is_error", False):
        return error_outcome(text or "The MCP tool reported an error.")
    structured = getattr(result, "structured_content", None)
    payload: dict[str, Any] = {"text": text}
    if structured is not None:
        try:
            json.dumps(structured, allow_nan=False)
            payload["structured"] = structured
        except (TypeError, ValueError):
            pass
    return ToolOutcome(result=payload)


def _arguments(arguments: Any) -> dict[str, Any]:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str | bytes):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            raise ToolError("Tool arguments are not valid JSON.") from None
    if not isinstance(arguments, dict):
        raise ToolError("Tool arguments must be a JSON object.")
    return arguments


async def _call(binding: McpBinding, arguments: dict[str, Any], user_id: int | None) -> ToolOutcome:
    server = binding.server
    credential = await database_sync_to_async(_credential)(server, user_id)
    async with mcp_client(server, credential=credential) as client:
        return result_outcome(await client.call_tool(binding.tool, arguments))


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def execute_mcp_tool(binding: McpBinding, arguments: Any, *, context: ToolContext) -> ToolOutcome:
    """Call one MCP tool; always a ToolOutcome (like ``execute_server_tool``), except that
    cancellation propagates: the call is cancelled and its connection closed within
    ``_CANCEL_GRACE`` seconds, whatever the server does."""
    server = binding.server
    try:
        parsed = _arguments(arguments)
    except ToolError as exc:
        return error_outcome(exc.message)
    timeout = float(settings.NEXUS_MCP_CONNECT_TIMEOUT) + float(settings.NEXUS_TOOLS_TIMEOUT)
    task = asyncio.ensure_future(_call(binding, parsed, context.user_id))
    task.add_done_callback(_retrieved)  # a call left behind may still fail: never an unread error
    try:
        async with asyncio.timeout(timeout):
            # shield: a stop cancels this task at once; the call's own task is then cancelled
            # below and given a moment to close its connection, but never waited for longer.
            return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.wait({task}, timeout=_CANCEL_GRACE)
        raise
    except TimeoutError:
        task.cancel()
        await asyncio.wait({task}, timeout=_CANCEL_GRACE)
        logger.warning("MCP tool %s of %s timed out after %.1f s", binding.tool, server.name, timeout)
        return error_outcome(f"The tool {binding.name} took longer than {timeout:g} s and was stopped.")
    except Exception as exc:
        detail = describe_failure(exc)
        logger.warning("MCP tool %s of %s failed: %s", binding.tool, server.name, detail)
        if _inner(exc, EgressDenied) is not None:
            await database_sync_to_async(_save_tools)(server.pk, None, detail)
            return error_outcome(
                f"The MCP server {server.name!r} is at an address the server's egress policy does not allow."
            )
        unavailable = _inner(exc, McpUnavailable)
        if isinstance(unavailable, McpUnavailable):
            return error_outcome(unavailable.public)
        from mcp import MCPError

        refused = _inner(exc, MCPError)
        if refused is not None:
            # An error the server answered with (an unknown tool, invalid arguments): the
            # server's own words about the call, as a tool's error text is.
            return error_outcome(f"The MCP server refused the call: {str(refused)[:500]}")
        return error_outcome(_unreachable(server))
    finally:
        if not task.done():
            task.cancel()


__all__ = [
    "McpBinding",
    "McpUnavailable",
    "describe_failure",
    "execute_mcp_tool",
    "mcp_bindings_for",
    "mcp_egress_policy",
    "mcp_list_tools",
    "mcp_refresh_tools",
    "mcp_refresh_tools_blocking",
    "result_outcome",
]
