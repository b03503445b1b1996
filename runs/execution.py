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
from runs import store
from runs import tools as run_tools
from runs.context import fit_request
from runs.dispatch import Claimed
from runs.domain_events import Info, RunError, RunFinished, RunStarted, StreamingChunk
from runs.eventlog import get_event_log
from runs.events import EventWriter, emit_reply_finished
from runs.models import Run, RunStatus
from runs.outcomes import Outcome, provider_failure, reply_too_long
from runs.store import db

if TYPE_CHECKING:
    from runs.manager import RunManager

logger = logging.getLogger(__name__)

# Seconds between the provider's first event being logged and the reply's row being stored.
REPLY_ROW_PAUSE = 0.01


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
        self.text: list[str] = []
        self.text_chars = 0
        self.usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self._last_checkpoint = time.monotonic()
        self._checkpointing: asyncio.Task[None] | None = None
        self._storing_reply: asyncio.Task[None] | None = None
        self._run_started: asyncio.Future[int] | None = None
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
        # Options first: they configure the registry (egress policy included) before it is asked.
        options = generation_options_for(self.agent)
        provider = get_provider(self.agent.provider)
        # The agent's MCP tools the run can offer now (their servers' tool lists, docs/mcp.md).
        self.mcp_bindings = await mcp_bindings_for(self.agent, self.conversation.owner_id)
        tools = run_tools.offered_tools(self.agent.tools, self.mcp_bindings, self._client_tools())
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
        agent_id = str(self.agent.pk)
        max_chars = settings.NEXUS_MAX_REPLY_CHARS
        for _round in range(settings.NEXUS_MAX_TOOL_ROUNDS + 1):
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
            for index, call in enumerate(calls):
                if index < calls_per_round:
                    outcome = await self._run_tool(call, executions.get(call.name))
                else:  # every call needs an answer in the model's next request
                    outcome = run_tools.over_cap_outcome(calls_per_round)
                messages.append(
                    ChatMessage(
                        role="tool",
                        content=json.dumps(outcome, ensure_ascii=False, default=str),
                        tool_call_id=call.id,
                        name=call.name,
                    )
                )
        return Outcome(finish_reason="tool_round_limit")

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

    async def _run_tool(self, call: ToolCall, execution: str | None) -> dict[str, Any]:
        if not await self._start_committed():
            raise asyncio.CancelledError  # abandoned: being cancelled already

        return await run_tools.run_tool_call(self, call, execution)

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
