"""A small process that owns the multi-process tests' database access: JSON lines in, JSON lines out.

The test process never opens the cluster's database itself (pytest-django guards the test
database); this process does, with the cluster's own settings, through the same services the
server uses. Started once per cluster: ``python -m tests.realtime_procs.dbtool``.

Commands (``{"op": ..., ...}``): ``user``, ``expired_token``, ``agent``, ``conversation``, ``conversations``,
``message``, ``run``, ``runs``, ``kb_document``, ``message_metadata``. Each answers ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any


def _user(username: str, is_staff: bool = False) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from core.auth import tokens_issue

    user = get_user_model().objects.create_user(
        username=username, password=f"{username}-password-123", is_staff=is_staff
    )
    return {"id": user.pk, "token": tokens_issue(user)["access_token"]}


def _expired_token(user_id: int) -> str:
    """A well-signed access token of ``user_id`` that expired a minute ago."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(get_user_model().objects.get(pk=user_id))
    token.set_exp(from_time=timezone.now(), lifetime=timedelta(minutes=-1))
    return str(token)


def _agent(
    owner_id: int,
    provider: str,
    model: str,
    config: dict[str, Any],
    base_url: str = "",
    name: str = "Agent",
    tools: list[str | dict[str, Any]] | None = None,
    status: str = "active",
) -> str:
    """An agent; ``tools``: names of built-in tools (agents.tools.builtin_tool_spec)."""
    from agents.models import Agent
    from agents.tools.registry import builtin_tool_spec

    agent = Agent.objects.create(
        owner_id=owner_id,
        name=name,
        provider=provider,
        model=model,
        config=config,
        base_url=base_url,
        # a name: that built-in tool's spec; a dict: a spec as given
        tools=[builtin_tool_spec(tool) if isinstance(tool, str) else tool for tool in tools or ()],
        status=status,
    )
    return str(agent.pk)


def _conversation(owner_id: int, agent_ids: list[str], settings: dict[str, Any] | None = None) -> str:
    from django.contrib.auth import get_user_model

    from agents.models import Agent
    from conversations.services import conversation_create

    owner = get_user_model().objects.get(pk=owner_id)
    agents = [Agent.objects.get(pk=pk) for pk in agent_ids]
    conversation = conversation_create(
        owner=owner,
        participants=[(agent, "primary" if i == 0 else "secondary") for i, agent in enumerate(agents)],
        settings=settings,
    )
    return str(conversation.pk)


def _conversations(owner_id: int, agent_ids: list[str], count: int) -> list[str]:
    return [_conversation(owner_id, agent_ids) for _ in range(count)]


def _message(message_id: str) -> dict[str, Any]:
    from conversations.models import Message

    m = Message.objects.get(pk=message_id)
    return {"content": m.content, "status": m.status, "seq": m.seq, "metadata": m.metadata}


def _run_dict(run: Any) -> dict[str, Any]:
    return {
        "id": str(run.pk),
        "status": run.status,
        "owner": run.owner,
        "reply_message_id": str(run.reply_message_id) if run.reply_message_id else None,
        "cancel_requested": run.cancel_requested,
    }


def _run(run_id: str) -> dict[str, Any]:
    from runs.models import Run

    return _run_dict(Run.objects.get(pk=run_id))


def _runs(conversation_id: str) -> list[dict[str, Any]]:
    from runs.models import Run

    return [_run_dict(r) for r in Run.objects.filter(conversation_id=conversation_id).order_by("created_at")]


def _kb_document(
    owner_id: int, base: str, text: str, title: str = "", source: str = "text"
) -> dict[str, Any]:
    """A text document in the user's base ``base`` (made if missing), run through the pipeline."""
    from django.contrib.auth import get_user_model

    from knowledge import services
    from knowledge.models import KnowledgeBase

    owner = get_user_model().objects.get(pk=owner_id)
    kb = KnowledgeBase.objects.filter(owner=owner, name=base).first() or services.base_create(
        owner=owner, name=base
    )
    document, _ = services.document_add_text(base=kb, text=text, title=title, source=source)
    document = services.document_ingest(document)
    return {"id": str(document.pk), "chunks": document.chunk_count, "status": document.status}


def _message_metadata(message_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """Merge ``metadata`` into a stored message's (a reply's ``sources``, as the search stores them)."""
    from conversations.models import Message

    m = Message.objects.get(pk=message_id)
    m.metadata = {**(m.metadata or {}), **metadata}
    m.save(update_fields=["metadata"])
    return m.metadata


OPS = {
    "kb_document": _kb_document,
    "message_metadata": _message_metadata,
    "user": _user,
    "expired_token": _expired_token,
    "agent": _agent,
    "conversation": _conversation,
    "conversations": _conversations,
    "message": _message,
    "run": _run,
    "runs": _runs,
}


def main() -> None:
    import django

    django.setup()
    from django.db import close_old_connections

    print(json.dumps({"ok": True, "result": "ready"}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.pop("op")
        try:
            close_old_connections()
            answer = {"ok": True, "result": OPS[op](**request)}
        except Exception as exc:
            answer = {"ok": False, "error": f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc()}"}
        print(json.dumps(answer, default=str), flush=True)


if __name__ == "__main__":
    main()
