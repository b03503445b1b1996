"""Durable pauses: a run that waits for a person (an approval) or a client (a client tool).

A tool call that needs a decision is stored with a ``PendingToolCall`` row (``pending``) before it
is announced; at the end of its step the run releases itself (``pause``: status ``waiting``, no
owner, its place in ``Run.paused``), so no task, socket or provider stream holds it. The first
decision is a conditional update from ``pending`` (``approval_decide``, a client's answer in
``runs.tool_answers``, the sweeper's timeout in ``expire_pending``); whoever decides then wakes the
run (``wake``: ``waiting`` -> ``queued``, then ``dispatch_run``), and the executor that claims it
resumes from the stored history (``runs.execution``).

The pause and a wake serialise on the run's row (``SELECT ... FOR UPDATE``): a decision that lands
before the run has released itself is seen by ``pause``, which then carries on in place.

Policy (docs/tools.md, "Approvals"): a server tool's spec may say ``approval: always | never |
ask`` (default ``never``) with ``allow`` and ``deny`` rules, each an object of argument patterns.
A ``deny`` rule that matches refuses the call without asking; ``always`` asks for every other
call, ``ask`` asks unless an ``allow`` rule matches, ``never`` runs it.
"""

from __future__ import annotations

import fnmatch
import json
import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conversations.models import Conversation, Message, MessageStatus
from conversations.selectors import conversation_get_for_user
from core.auth import User
from core.errors import Conflict, NotFound
from providers.base import ToolCall
from runs.dispatch import dispatch_run
from runs.domain_events import ApprovalDecided
from runs.eventlog import get_event_log
from runs.events import EventWriter
from runs.models import ACTIVE_RUN_STATUSES, PendingKind, PendingStatus, PendingToolCall, Run, RunStatus
from runs.store import db

Policy = Literal["run", "ask", "deny"]
APPROVAL_MODES = ("always", "never", "ask")


# --- policy --------------------------------------------------------------------------------------


def _matches(rule: dict[str, Any], arguments: Any) -> bool:
    """Every argument the rule names is there and matches its pattern (``fnmatch``, case-sensitive;
    a value that is not text is matched as its JSON). ``{}`` matches every call."""
    if not isinstance(arguments, dict):
        return not rule
    for key, pattern in rule.items():
        if key not in arguments:
            return False
        value = arguments[key]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
        if not fnmatch.fnmatchcase(text, str(pattern)):
            return False
    return True


def tool_policy(spec: dict[str, Any] | None, arguments: Any) -> Policy:
    """What a run does with a call of the tool ``spec`` describes: run it, ask a person, or refuse."""
    if not spec:
        return "run"
    if any(_matches(rule, arguments) for rule in spec.get("deny") or []):
        return "deny"
    mode = spec.get("approval") or "never"
    if mode == "never":
        return "run"
    if mode == "ask" and any(_matches(rule, arguments) for rule in spec.get("allow") or []):
        return "run"
    return "ask"


def denied_outcome(name: str, status: str) -> dict[str, Any]:
    """The result the model gets for a call that did not run: refused by a rule, denied by a person,
    or not decided in time."""
    shown = name if len(name) <= 64 else name[:64] + "…"
    message = {
        "rule": f"The call of {shown!r} is not allowed by this agent's rules; it did not run.",
        PendingStatus.DENIED: f"The user denied the call of {shown!r}; it did not run.",
        PendingStatus.TIMED_OUT: f"Nobody approved the call of {shown!r} in time; it did not run.",
    }.get(status, f"The call of {shown!r} did not run.")
    return {"result": {"error": message}, "is_error": True}


def pending_expiry(kind: str) -> datetime:
    seconds = (
        settings.NEXUS_APPROVAL_TIMEOUT_SECONDS
        if kind == PendingKind.APPROVAL
        else settings.NEXUS_CLIENT_TOOL_TIMEOUT
    )
    return timezone.now() + timedelta(seconds=seconds)


# --- the pause -----------------------------------------------------------------------------------


def pending_create(
    *, run_id: str, conversation_id: uuid.UUID | str, call: ToolCall, agent_id: str, kind: str
) -> PendingToolCall:
    return PendingToolCall.objects.create(
        run_id=run_id,
        conversation_id=conversation_id,
        tool_call_id=call.id,
        tool=call.name,
        parameters=call.arguments if isinstance(call.arguments, dict) else {},
        agent_id=agent_id,
        kind=kind,
        expires_at=pending_expiry(kind),
    )


def pending_of(run_id: str, tool_call_id: str) -> PendingToolCall | None:
    return PendingToolCall.objects.filter(run_id=run_id, tool_call_id=tool_call_id).first()


def call_as_dict(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def call_from_dict(data: dict[str, Any]) -> ToolCall:
    return ToolCall(id=str(data["id"]), name=str(data["name"]), arguments=data.get("arguments") or {})


PauseResult = Literal["paused", "decided", "stopped", "gone"]


def pause(
    *,
    run_id: str,
    round_: int,
    calls: list[ToolCall],
    reply_id: uuid.UUID | str | None,
    content: str,
    usage: dict[str, int],
    conversation_id: uuid.UUID | str,
    last_seq: int,
) -> PauseResult:
    """Release a running run at a call that waits (``calls[0]``; the rest of its round follow it):
    ``paused`` when it now waits, stored; ``decided`` when every call it waited on was decided
    already (it carries on in place); ``stopped`` when it was told to stop; ``gone`` when its row
    was deleted."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return "gone"
        if run.cancel_requested or run.status != RunStatus.RUNNING:
            return "stopped"
        if not PendingToolCall.objects.filter(run_id=run_id, status=PendingStatus.PENDING).exists():
            return "decided"
        Run.objects.filter(pk=run_id).update(
            status=RunStatus.WAITING,
            owner="",
            heartbeat_at=None,
            usage=usage,
            paused={"round": round_, "calls": [call_as_dict(c) for c in calls]},
        )
        if reply_id is not None:
            Message.objects.filter(pk=reply_id, status=MessageStatus.STREAMING).update(content=content)
        Conversation.objects.filter(pk=conversation_id, last_seq__lt=last_seq).update(last_seq=last_seq)
    return "paused"


def _requeue(run_id: str) -> bool:
    """A waiting run whose calls are all decided goes back to the queue (once: under its row lock)."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status != RunStatus.WAITING:
            return False
        if PendingToolCall.objects.filter(run_id=run_id, status=PendingStatus.PENDING).exists():
            return False
        Run.objects.filter(pk=run_id).update(status=RunStatus.QUEUED)
    return True


async def wake(run_id: str) -> bool:
    """Hand a waiting run whose calls are decided to an executor (this process or a worker). A lost
    dispatch is found again by the sweeper (``_lost_queued_runs``)."""
    if not await db(_requeue)(str(run_id)):
        return False
    await dispatch_run(str(run_id))
    return True


# --- decisions -----------------------------------------------------------------------------------


def _decide(
    *, user: User, conversation_id: uuid.UUID | str, tool_call_id: str, approve: bool
) -> tuple[PendingToolCall, Conversation]:
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    rows = PendingToolCall.objects.filter(
        conversation=conversation, tool_call_id=tool_call_id, kind=PendingKind.APPROVAL
    ).order_by("-created_at")
    row = rows.filter(status=PendingStatus.PENDING).first() or rows.first()
    if row is None:
        raise NotFound("No tool call waits for approval with that id in this conversation.")
    if (
        row.status == PendingStatus.PENDING
        and not Run.objects.filter(pk=row.run_id, status__in=ACTIVE_RUN_STATUSES).exists()
    ):
        raise Conflict("The run of this tool call has ended.", details={"toolCallId": tool_call_id})
    decision = PendingStatus.APPROVED if approve else PendingStatus.DENIED
    won = PendingToolCall.objects.filter(pk=row.pk, status=PendingStatus.PENDING).update(
        status=decision, decided_by=user, decided_at=timezone.now()
    )
    if not won:
        row.refresh_from_db(fields=["status"])
        raise Conflict(
            "This tool call was already decided.",
            details={"toolCallId": tool_call_id, "decision": row.status},
        )
    row.status = decision
    return row, conversation


async def _announce(conversation: Conversation, row: PendingToolCall, decided_by: int | None) -> None:
    writer = EventWriter(
        get_event_log(), str(conversation.pk), owner_id=conversation.owner_id, floor=conversation.last_seq
    )
    await writer.emit_now(
        ApprovalDecided(
            tool_call_id=row.tool_call_id,
            tool=row.tool,
            decision=row.status,
            run_id=str(row.run_id),
            decided_by=decided_by,
        )
    )


async def approval_decide(
    *, user: User, conversation_id: uuid.UUID | str, tool_call_id: str, approve: bool
) -> dict[str, Any]:
    """``approve`` / ``deny`` a call waiting for approval in a conversation ``user`` may access. The
    first decision wins; a later one gets ``Conflict``. Watchers see ``approval_decided``, then the
    run resumes wherever an executor claims it."""
    row, conversation = await db(_decide)(
        user=user, conversation_id=conversation_id, tool_call_id=tool_call_id, approve=approve
    )
    await _announce(conversation, row, user.pk)
    await wake(str(row.run_id))
    return {"toolCallId": row.tool_call_id, "decision": row.status, "run_id": str(row.run_id)}


# --- the sweeper's part --------------------------------------------------------------------------


def _expire() -> list[tuple[PendingToolCall, Conversation]]:
    now = timezone.now()
    expired = []
    rows = PendingToolCall.objects.filter(
        status=PendingStatus.PENDING, expires_at__lt=now, run__status__in=ACTIVE_RUN_STATUSES
    ).select_related("conversation")
    for row in rows[:200]:
        if PendingToolCall.objects.filter(pk=row.pk, status=PendingStatus.PENDING).update(
            status=PendingStatus.TIMED_OUT, decided_at=now
        ):
            row.status = PendingStatus.TIMED_OUT
            expired.append((row, row.conversation))
    return expired


def _stranded() -> list[str]:
    """Waiting runs with nothing pending (their waker died between the decision and the wake); and
    the calls of runs that ended another way (their process died) wait for nothing any more."""
    PendingToolCall.objects.filter(status=PendingStatus.PENDING).exclude(
        run__status__in=ACTIVE_RUN_STATUSES
    ).update(status=PendingStatus.CANCELLED, decided_at=timezone.now())
    pending = PendingToolCall.objects.filter(status=PendingStatus.PENDING).values("run_id")
    return [
        str(pk)
        for pk in Run.objects.filter(status=RunStatus.WAITING)
        .exclude(pk__in=pending)
        .values_list("pk", flat=True)[:200]
    ]


async def expire_pending(*, stranded: bool = False) -> int:
    """Deny the calls nobody decided in time (``timed_out``; a client tool's gets its timeout
    result when its run resumes) and wake their runs; with ``stranded``, wake the waiting runs
    whose calls were all decided but which were never woken."""
    expired = await db(_expire)()
    for row, conversation in expired:
        if row.kind == PendingKind.APPROVAL:
            await _announce(conversation, row, None)
        await wake(str(row.run_id))
    if stranded:
        for run_id in await db(_stranded)():
            await wake(run_id)
    return len(expired)


def pending_cancel(run_ids: list[Any]) -> None:
    """The calls of stopped or finished runs wait for nothing any more."""
    PendingToolCall.objects.filter(run_id__in=run_ids, status=PendingStatus.PENDING).update(
        status=PendingStatus.CANCELLED, decided_at=timezone.now()
    )
