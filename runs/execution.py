"""The execution of one run: ask the provider, relay the reply, run its tools, write its end.

The reply's row is stored just after the provider's first event is relayed (``REPLY_ROW_PAUSE``),
checkpointed while it streams, and finished in one transaction (``runs.store``); then the reply
and the run's end are emitted (``runs.events.emit_reply_finished``). A run launched early
(``runs.early_start``) holds its events and writes nothing until its start has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings

from agents.config_reload import config_reload_if_stale
from agents.provider_config import generation_options_for
from agents.tools.mcp import McpBinding, mcp_bindings_for
from conversations.models import Message, MessageStatus
from providers.base import (
    ChatMessage,
    Finished,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
    UsageReport,
)
from providers.registry import get_provider
from runs import approvals, store
from runs import tools as run_tools
from runs.context import fit_request
from runs.dispatch import Claimed
from runs.domain_events import Info, RunError, RunFinished, RunStarted, StreamingChunk
from runs.eventlog import get_event_log
from runs.events import EventWriter, emit_reply_finished
from runs.knowledge import RunKnowledge
from runs.models import Run, RunStatus
from runs.outcomes import Outcome, provider_failure, reply_too_long
from runs.store import db

if TYPE_CHECKING:
    from runs.manager import RunManager

logger = logging.getLogger(__name__)

# Seconds between the provider's first event being logged and the reply's row being stored.
REPLY_ROW_PAUSE = 0.01


def _answer(messages: list[ChatMessage], call: ToolCall, outcome: dict[str, Any]) -> None:
    messages.append(
        ChatMessage(
            role="tool",
            content=json.dumps(outcome, ensure_ascii=False, default=str),
            tool_call_id=call.id,
            name=call.name,
        )
    )


class Execution:
    """One run executing in this process: its reply streamed from the provider (``_generate``),
    its tool calls (``runs.tools``), and its end written and told once (``_finalise``)."""

    def __init__(self, manager: RunManager, claimed: Claimed) -> None:
        self.manager = manager
        self.run_row = claimed.run
        self.agent = claimed.agent
        self.conversation = claimed.conversation
        self.refusal = claimed.refusal
        self.history = claimed.history
        self.touch = claimed.touch
        self.run_id = str(claimed.run.pk)
        self.writer = EventWriter(
            get_event_log(),
            str(self.conversation.pk),
            owner_id=self.conversation.owner_id,
            floor=self.conversation.last_seq,
        )
        self.claimed = claimed
        self.early = claimed.early
        self.abandoned = False  # launched early, its start failed: it never existed
        self.task: asyncio.Task[Any] | None = None
        if self.early is not None:
            self.early.hold(self.writer, self._abandon)
        self.reply: Message | None = None
        self.knowledge = RunKnowledge(self.agent, self.conversation.owner_id)  # its scope and sources
        self.text: list[str] = []
        self.text_chars = 0
        self.usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self._last_checkpoint = time.monotonic()
        self._checkpointing: asyncio.Task[None] | None = None
        self._storing_reply: asyncio.Task[None] | None = None
        self._run_started: asyncio.Future[int] | None = None
        # A run that paused at a call that waits (runs.approvals) and now resumes: its round and
        # the calls of that round still to run. ``paused``: this execution ended by pausing.
        self.resume_from: dict[str, Any] = dict(claimed.run.paused or {})
        self.paused = False
        self.mcp_bindings: dict[str, McpBinding] = {}

    @property
    def message_id(self) -> str:
        return str(self.reply.pk) if self.reply else ""

    def _abandon(self) -> None:
        self.abandoned = True
        if self.task is not None:
            self.task.cancel()

    async def _start_committed(self) -> bool:
        """Before the run's first write: is its start committed? (True when it was not launched
        early.)"""
        if self.early is None:
            return True
        return await self.early.committed()

    async def run(self) -> None:
        self.task = asyncio.current_task()
        if self.abandoned:
            return
        outcome = Outcome()
        try:
            # The provider is asked at once; the reply's row is stored just after the provider's
            # first event is relayed (or at the end), with the seq of run_started: the database
            # thread's work then never competes with sending the request and relaying the first
            # token (events keep their order in the writer; checkpoints and _finalise wait for the
            # row).
            if not (self.resume_from and await self._resume_reply()):
                self.resume_from = {}
                self.reply = store.new_reply(self.run_row)
                self._run_started = self.writer.emit_tracked(
                    RunStarted(run_id=self.run_id, agent_id=str(self.agent.pk), message_id=self.message_id)
                )
            if self.refusal:
                outcome = Outcome(
                    status=RunStatus.FAILED,
                    message_status=MessageStatus.ERROR,
                    error={"code": "agent_unavailable", "message": self.refusal},
                )
                self.writer.emit(RunError(code="agent_unavailable", message=self.refusal, run_id=self.run_id))
            else:
                outcome = await self._generate()
        except asyncio.CancelledError:
            if self.abandoned:
                return  # nothing was logged or stored; the provider's stream is closed
            if self.run_id in self.manager.stopping:
                outcome = Outcome(
                    status=RunStatus.STOPPED, message_status=MessageStatus.STOPPED, finish_reason="stopped"
                )
            else:
                outcome = Outcome(status=RunStatus.INCOMPLETE, message_status=MessageStatus.INCOMPLETE)
                await asyncio.shield(self._finalise(outcome))
                raise
        except ProviderError as exc:
            outcome = provider_failure(self.writer, self.run_id, exc)
        except Exception:
            if (await self._vanished())[0]:
                # Deleted under it (a row it wrote had nothing to refer to): a stop, not a failure.
                outcome = Outcome(
                    status=RunStatus.STOPPED, message_status=MessageStatus.STOPPED, finish_reason="stopped"
                )
                await asyncio.shield(self._finalise(outcome))
                return
            logger.exception("run %s failed", self.run_id)
            outcome = Outcome(
                status=RunStatus.FAILED,
                message_status=MessageStatus.ERROR,
                error={"code": "internal", "message": "The run failed on the server."},
            )
            self.writer.emit(
                RunError(code="internal", message="The run failed on the server.", run_id=self.run_id)
            )
        try:
            await asyncio.shield(self._finalise(outcome))
        except asyncio.CancelledError:
            if not self.abandoned:  # abandoned: _finalise writes nothing and ends by itself
                raise

    async def _generate(self) -> Outcome:
        # A reload another process announced (seed 002's reload_config) applies here first.
        await config_reload_if_stale()
        # Options first: they configure the registry (egress policy included) before it is asked.
        options = generation_options_for(self.agent)
        provider = get_provider(self.agent.provider)
        # The agent's MCP tools the run can offer now (their servers' tool lists, docs/mcp.md).
        self.mcp_bindings = await mcp_bindings_for(self.agent, self.conversation.owner_id)
        tools = run_tools.offered_tools(self.agent.tools, self.mcp_bindings, self._client_tools())
        tools += await self.knowledge.tools(tools)  # knowledge_search, for an agent with bases
        tool_specs = [
            ToolSpec(
                name=t["name"], description=t.get("description", ""), parameters=t.get("parameters") or {}
            )
            for t in tools
        ]
        # The only tools this run executes: a name the agent does not list is refused.
        executions = {t["name"]: t.get("execution", "server") for t in tools}
        calls_per_round = settings.NEXUS_MAX_TOOL_CALLS_PER_ROUND
        messages = self.history
        if messages is None:
            assert self.reply is not None  # made by start()
            messages = await db(store.reply_history)(self.conversation, self.agent, self.reply.pk)
        messages = await self.knowledge.retrieve(list(messages), options)  # mode retrieve: passages
        agent_id = str(self.agent.pk)
        max_chars = settings.NEXUS_MAX_REPLY_CHARS
        specs = {t["name"]: t for t in tools}
        first_round = 0
        if self.resume_from:
            # The round it paused in: the call it waited on is decided; the rest of the round runs.
            first_round = int(self.resume_from.get("round", 0))
            rest = [approvals.call_from_dict(c) for c in self.resume_from.get("calls") or []]
            ended = await self._run_calls(first_round, rest, messages, executions, specs, resumed=True)
            if ended is not None:
                return ended
            first_round += 1
        for _round in range(first_round, settings.NEXUS_MAX_TOOL_ROUNDS + 1):
            calls: list[ToolCall] = []
            finished: Finished | None = None
            request, request_options = await fit_request(self.agent, messages, options)  # the window
            stream = provider.stream_chat(
                model=self.agent.model, messages=request, tools=tool_specs, options=request_options
            )
            async with contextlib.aclosing(stream):
                async for item in stream:
                    if isinstance(item, TextDelta):
                        if not item.text:
                            continue
                        if self.first_token_at is None:
                            self.first_token_at = time.monotonic()
                        text = item.text[: max_chars - self.text_chars]
                        if text:
                            self.text.append(text)
                            self.text_chars += len(text)
                            self.writer.emit_chunk(message_id=self.message_id, agent_id=agent_id, chunk=text)
                            self._maybe_checkpoint()
                        if len(text) < len(item.text):
                            return reply_too_long(
                                self.writer, self.run_id, max_chars
                            )  # closes the provider's stream
                    elif isinstance(item, ToolCall):
                        calls.append(item)
                    elif isinstance(item, UsageReport):
                        self._add_usage(item.usage)
                    elif isinstance(item, Finished):
                        finished = item
                        self._add_usage(item.usage)
                    if self._storing_reply is None:
                        # The reply's row once the provider's first event is relayed: the database
                        # thread's Python holds the GIL for about 1.5 ms, and run at once it delayed
                        # the socket's write of the first token (time to first token).
                        self._store_reply_soon(pause=REPLY_ROW_PAUSE)
            if finished is None:
                raise ProviderError("incomplete", "The provider's stream ended before it finished.")
            if finished.reason == "blocked":
                error = {
                    "code": "provider_error",
                    "message": "The provider blocked this reply.",
                    "kind": "blocked",
                }
                self.writer.emit(
                    RunError(
                        code=error["code"], message=error["message"], run_id=self.run_id, error_kind="blocked"
                    )
                )
                return Outcome(
                    status=RunStatus.FAILED,
                    message_status=MessageStatus.ERROR,
                    finish_reason="blocked",
                    error=error,
                )
            if not calls or finished.reason not in ("tool_calls", "stop"):
                return Outcome(finish_reason=finished.reason)
            if _round >= settings.NEXUS_MAX_TOOL_ROUNDS:
                self.writer.emit(Info(code="tool_round_limit", message="Tool round limit reached."))
                return Outcome(finish_reason="tool_round_limit")
            messages = [*messages, ChatMessage(role="assistant", content="", tool_calls=tuple(calls))]
            if len(calls) > calls_per_round:
                logger.warning(
                    "run %s: the model made %d tool calls in one round; %d refused (cap %d)",
                    self.run_id,
                    len(calls),
                    len(calls) - calls_per_round,
                    calls_per_round,
                )
                self.writer.emit(
                    Info(
                        code="tool_call_limit",
                        message=f"Only {calls_per_round} tool calls per round run; "
                        f"{len(calls) - calls_per_round} were refused.",
                    )
                )
            ended = await self._run_calls(_round, calls[:calls_per_round], messages, executions, specs)
            if ended is not None:
                return ended
            for call in calls[calls_per_round:]:  # every call needs an answer in the model's next request
                _answer(messages, call, run_tools.over_cap_outcome(calls_per_round))
        return Outcome(finish_reason="tool_round_limit")

    async def _run_calls(
        self,
        round_: int,
        calls: list[ToolCall],
        messages: list[ChatMessage],
        executions: dict[str, Any],
        specs: dict[str, dict[str, Any]],
        *,
        resumed: bool = False,
    ) -> Outcome | None:
        """Run a round's calls in order, each answer added to ``messages``; None when all ran, or the
        outcome that ends this execution: it paused at a call that waits (``runs.approvals``).

        ``resumed``: the round of a run that paused; its first call is the one it waited on, now
        decided, and the calls after it are not in the stored history yet (each gets its own
        assistant turn, as the history rebuilt from the database shows calls)."""
        for index, call in enumerate(calls):
            if resumed and index == 0:
                outcome: dict[str, Any] | None = await run_tools.resume_call(self, call)
                # A client's answer was stored before the history was read: it is answered below,
                # in the shape the model sees within a run, once.
                messages[:] = [m for m in messages if not (m.role == "tool" and m.tool_call_id == call.id)]
            else:
                if resumed:
                    messages.append(ChatMessage(role="assistant", content="", tool_calls=(call,)))
                outcome = await self._run_tool(
                    call,
                    executions.get(call.name),
                    approvals.tool_policy(specs.get(call.name), call.arguments),
                )
            if outcome is None:
                if await self._pause(round_, calls[index:]):
                    return Outcome(status=RunStatus.WAITING, finish_reason="waiting")
                outcome = await run_tools.resume_call(self, call)  # decided already: on in place
            _answer(messages, call, outcome)
        return None

    async def _pause(self, round_: int, calls: list[ToolCall]) -> bool:
        """Release the run at ``calls[0]``, which waits: True when it is paused (stored, owned by no
        process); False when the call was decided already and the run carries on here."""
        if self._storing_reply is not None:
            await asyncio.shield(self._storing_reply)  # the reply's row holds the text so far
        if self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing
        last_seq = await self.writer.flush()
        result = await db(approvals.pause)(
            run_id=self.run_id,
            round_=round_,
            calls=calls,
            reply_id=self.reply.pk if self.reply is not None else None,
            content="".join(self.text),
            usage=self.usage,
            conversation_id=self.conversation.pk,
            last_seq=last_seq,
        )
        if result == "decided":
            return False
        if result != "paused":  # told to stop, or deleted, while it paused
            self.manager.stopping.add(self.run_id)
            raise asyncio.CancelledError
        self.paused = True
        return True

    async def _resume_reply(self) -> bool:
        """A paused run resuming: its reply's row and text so far (no second ``run_started``: the
        reply goes on under the same id). False if the row is gone (a fresh reply then)."""
        reply_id = self.run_row.reply_message_id
        reply = await db(store.reply_of)(reply_id) if reply_id else None
        if reply is None:
            return False
        self.reply = reply
        if reply.content:
            self.text = [reply.content]
            self.text_chars = len(reply.content)
        for key, value in (self.run_row.usage or {}).items():
            if key in self.usage and isinstance(value, int):
                self.usage[key] = value
        self._storing_reply = asyncio.get_running_loop().create_task(asyncio.sleep(0))
        return True

    def _client_tools(self) -> list[dict[str, Any]]:
        """The client tools its person offered with the message this run answers (AG-UI's
        frontend tools, ``message_send(client_tools=...)``), after the agent's own: an agent's
        tool keeps its name."""
        run = self.run_row
        if not Run.trigger_message.is_cached(run) or run.trigger_message is None:
            return []
        offered = run.trigger_message.metadata.get("client_tools") or []
        own = {t.get("name") for t in (self.agent.tools or [])}
        return [{**t, "execution": "client"} for t in offered if t.get("name") not in own]

    async def _run_tool(
        self, call: ToolCall, execution: str | None, policy: approvals.Policy
    ) -> dict[str, Any] | None:
        if not await self._start_committed():
            raise asyncio.CancelledError  # abandoned: being cancelled already

        return await run_tools.run_tool_call(self, call, execution, policy=policy)

    def _add_usage(self, usage: Usage | None) -> None:
        if usage is None:
            return
        self.usage["input_tokens"] = max(self.usage["input_tokens"], getattr(usage, "input_tokens", 0) or 0)
        self.usage["output_tokens"] = max(
            self.usage["output_tokens"], getattr(usage, "output_tokens", 0) or 0
        )
        self.usage["total_tokens"] = self.usage["input_tokens"] + self.usage["output_tokens"]

    def _maybe_checkpoint(self) -> None:
        now = time.monotonic()
        if now - self._last_checkpoint < settings.NEXUS_CHECKPOINT_SECONDS:
            return
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        self._last_checkpoint = now
        self._checkpointing = asyncio.get_running_loop().create_task(
            self._checkpoint("".join(self.text), self.writer.last_seq)
        )

    async def _checkpoint(self, content: str, last_seq: int) -> None:
        if not await self._start_committed():
            return
        if self._storing_reply is not None:
            await asyncio.shield(self._storing_reply)  # the row first: an update of nothing is lost
        assert self.reply is not None  # made by start()
        await db(store.checkpoint)(self.reply.pk, content, self.conversation.pk, last_seq)

    def _store_reply_soon(self, *, pause: float = 0.0) -> None:
        assert self._run_started is not None  # emitted by start()
        self._storing_reply = asyncio.get_running_loop().create_task(
            self._record_reply(self._run_started, self.writer.logged(), pause)
        )

    async def _record_reply(
        self, started: asyncio.Future[int], logged: asyncio.Future[int], pause: float
    ) -> None:
        if not await self._start_committed():
            return
        seq = await started
        await logged
        if pause:
            await asyncio.sleep(pause)
        assert self.reply is not None  # made by start()
        await db(store.store_reply)(
            self.reply, self.run_id, seq, trigger_seq=self.claimed.trigger_seq, touch=self.touch
        )

    async def _finalise(self, outcome: Outcome) -> None:
        if not await self._start_committed():
            return
        if self.paused:  # stored by approvals.pause; its end is told when it resumes and ends
            await self.writer.flush()
            return
        content = "".join(self.text)
        elapsed = time.monotonic() - self.started
        metadata = {
            "provider": self.agent.provider,
            "model": self.agent.model,
            "usage": self.usage,
            "finish_reason": outcome.finish_reason,
            "latency_ms": round(elapsed * 1000, 1),
            "time_to_first_token_ms": round((self.first_token_at - self.started) * 1000, 1)
            if self.first_token_at
            else None,
        }
        if outcome.error:  # why it failed, shown with the reply after a reload
            metadata["error"] = outcome.error
        metadata.update(await self.knowledge.metadata(self.conversation.pk, self.run_id))  # sources
        if self._storing_reply is None and self.reply is not None:
            self._store_reply_soon()
        if self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing
        if self._storing_reply is not None:
            try:
                await self._storing_reply
            except Exception:
                if await self._end_deleted(content):
                    return
                logger.exception("run %s: its reply could not be stored", self.run_id)
                return  # still running in the database: the sweeper declares it incomplete
        if self.reply is None:
            return
        finished = await db(store.finish)(
            self.run_id, self.reply.pk, content=content, outcome=outcome, usage=self.usage, metadata=metadata
        )
        if not finished:
            # The sweeper already declared it incomplete and told everyone, or it was deleted.
            await self._end_deleted(content)
            return
        agent_id = str(self.agent.pk)
        self.writer.emit(
            StreamingChunk(message_id=self.message_id, agent_id=agent_id, chunk="", is_done=True)
        )
        emit_reply_finished(
            self.writer,
            run_id=self.run_id,
            status=outcome.status,
            usage=self.usage,
            error=outcome.error,
            agent_id=agent_id,
            agent_name=self.agent.name,
            message_id=self.message_id,
            content=content,
            message_status=outcome.message_status,
            metadata=metadata,
        )
        last_seq = await self.writer.flush()
        await db(store.checkpoint_seq)(self.conversation.pk, last_seq)

    async def _vanished(self) -> tuple[bool, bool]:
        """(the run's row is gone, its conversation's too); (False, False) if the database cannot
        tell (the failure at hand is then reported as it is)."""
        try:
            return await db(store.vanished)(self.run_id, self.conversation.pk)
        except Exception:
            return False, False

    async def _end_deleted(self, content: str) -> bool:
        """The run's row was deleted while it replied: a quiet stop (no error, no traceback). When
        its conversation was deleted, whoever deleted it told the watchers
        (``runs.stopping.conversation_delete_with_runs``); when only the run or its agent was, the
        reply stays, stopped, and the watchers get ``run_finished`` ``stopped``. False if the
        run's row is still there."""
        run_gone, conversation_gone = await self._vanished()
        if not run_gone:
            return False
        logger.info("run %s: deleted while it replied; stopped", self.run_id)
        if conversation_gone:
            return True
        if self.reply is not None:
            await db(store.stop_orphan_reply)(self.reply.pk, content)
        self.writer.emit(
            RunFinished(
                run_id=self.run_id,
                status=RunStatus.STOPPED,
                usage=self.usage,
                agent_id=str(self.agent.pk),
                message_id=self.message_id,
            )
        )
        await self.writer.flush()
        return True
