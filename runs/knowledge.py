"""Knowledge in a run: the ``knowledge_search`` tool offered, passages retrieved before generation,
and the reply's sources (docs/knowledge.md, "Agents and sources").

The scope is ``agents.knowledge.knowledge_scope``: the agent's bases that the conversation's user
may read. An agent in mode ``tool`` with a scope is offered ``knowledge_search`` (unless it lists
it itself); in mode ``retrieve`` the person's message is searched before the provider is asked
and the best passages go into the request as numbered context, as many as the window leaves room
for. Either way the passages become the reply's ``metadata["sources"]``, deduplicated by chunk.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from channels.db import database_sync_to_async

from agents.knowledge import knowledge_scope, source_of
from agents.models import Agent, KnowledgeMode
from agents.tools import builtin_tool_spec
from agents.tools.knowledge_search import NAME as TOOL_NAME
from conversations.models import Message, MessageType
from knowledge.models import KnowledgeBase
from knowledge.search import Mode, search
from providers.base import ChatMessage, GenerationOptions, ProviderError
from runs.context import token_counter_of
from runs.history import reply_reserve

logger = logging.getLogger(__name__)

MAX_SOURCES = 20
RETRIEVE_TOP_K = 4
RETRIEVE_MODE: Mode = "hybrid"
RETRIEVE_INSTRUCTION = (
    "Passages from the user's documents that may answer the question follow. Answer from them "
    "when they are relevant and cite each passage you use by its number, like [1]."
)


class RunKnowledge:
    """One run's knowledge: its scope (read once), the tool it adds, the sources it gathers."""

    def __init__(self, agent: Agent, user_id: int | None) -> None:
        self.agent = agent
        self.user_id = user_id
        self.sources: list[dict[str, Any]] = []
        self._chunks: set[Any] = set()
        self._scope: list[KnowledgeBase] | None = None
        self._searching = False  # knowledge_search offered to the model in this execution

    async def scope(self) -> list[KnowledgeBase]:
        if self._scope is None:
            if not self.agent.knowledge_bases or self.agent.knowledge_mode == KnowledgeMode.OFF:
                self._scope = []  # no query for the agents without knowledge
            else:
                self._scope = await database_sync_to_async(knowledge_scope)(self.agent, self.user_id)
        return self._scope

    async def tools(self, listed: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The tool specs to add to the agent's own: ``knowledge_search`` in mode tool."""
        if any(t["name"] == TOOL_NAME for t in listed):
            self._searching = True  # listed by the agent itself (or a client tool of that name)
            return []
        if self.agent.knowledge_mode != KnowledgeMode.TOOL or not await self.scope():
            return []
        self._searching = True
        return [builtin_tool_spec(TOOL_NAME)]

    def _collect(self, result: Any) -> None:
        """Keep the passages one ``knowledge_search`` call returned."""
        passages = result.get("passages") if isinstance(result, dict) else None
        for passage in passages or []:
            if isinstance(passage, dict):
                self._add({key: value for key, value in passage.items() if key != "citation"})

    def _add(self, source: dict[str, Any]) -> None:
        key = source.get("chunk_id") or (source.get("document_id"), source.get("text"))
        if key in self._chunks or len(self.sources) >= MAX_SOURCES:
            return
        self._chunks.add(key)
        self.sources.append(source)

    async def metadata(self, conversation_id: Any, run_id: str) -> dict[str, Any]:
        """What the reply's metadata gains: its sources, when it has any. The tool's passages are
        read back from the run's stored results (a run that paused and resumed, in this process
        or another, keeps the ones from before its pause), after those retrieved."""
        if self._searching or self.agent.knowledge_bases:
            try:
                results = await database_sync_to_async(_search_results)(conversation_id, run_id)
            except Exception:  # the reply is stored all the same, without the tool's passages
                logger.exception("run %s: its knowledge_search results could not be read", run_id)
                results = []
            for result in results:
                self._collect(result)
        return {"sources": list(self.sources)} if self.sources else {}

    async def retrieve(self, messages: list[ChatMessage], options: GenerationOptions) -> list[ChatMessage]:
        """Mode retrieve: ``messages`` with the passages found for the person's message put in
        the system prompt, numbered, as many as fit; the others as they were."""
        if self.agent.knowledge_mode != KnowledgeMode.RETRIEVE:
            return messages
        query = next((m.content for m in reversed(messages) if m.role == "user"), "")
        bases = await self.scope()
        if not bases or not query.strip():
            return messages
        try:
            hits = await search(bases, query[:2000], mode=RETRIEVE_MODE, top_k=RETRIEVE_TOP_K)
        except (ProviderError, ValueError):
            # A provider embedding model that is down: the reply goes on without passages.
            logger.warning("agent %s: knowledge retrieval failed; answering without it", self.agent.pk)
            return messages
        sources = [source_of(hit) for hit in hits]
        if not sources:
            return messages
        if self.agent.provider == "local":  # llama.cpp's tokenizer: C code that may load the vocabulary
            fitted, kept = await asyncio.to_thread(self._fitted, messages, sources, options)
        else:
            fitted, kept = self._fitted(messages, sources, options)
        for source in kept:
            self._add(source)
        return fitted

    def _fitted(
        self, messages: list[ChatMessage], sources: list[dict[str, Any]], options: GenerationOptions
    ) -> tuple[list[ChatMessage], list[dict[str, Any]]]:
        counter = token_counter_of(self.agent, options)
        kept = list(sources)
        if counter is None:
            return with_passages(messages, kept), kept
        # Passages go before older turns: they are fitted beside the newest turn only, and
        # fit_request then drops the older turns that no longer fit.
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=0)
        essential = [*(m for m in messages[:last_user] if m.role == "system"), *messages[last_user:]]
        room = counter.window - reply_reserve(window=counter.window, max_tokens=options.max_tokens)
        if counter.prompt_tokens(with_passages(essential, kept)) > room:
            # Best first, each passage that still fits beside those taken; the others are left out.
            taken: list[dict[str, Any]] = []
            for source in kept:
                if counter.prompt_tokens(with_passages(essential, [*taken, source])) <= room:
                    taken.append(source)
            kept = taken
        return (with_passages(messages, kept), kept) if kept else (messages, [])


def _search_results(conversation_id: Any, run_id: str) -> list[Any]:
    """The results of the run's successful ``knowledge_search`` calls that ran on the server (a
    client tool of the same name answers what its client likes: never sources), in order."""
    calls = Message.objects.filter(
        conversation_id=conversation_id,
        type=MessageType.TOOL_CALL,
        metadata__run_id=run_id,
        metadata__tool=TOOL_NAME,
        metadata__execution="server",
    ).values_list("metadata__toolCallId", flat=True)
    ids = {str(call_id) for call_id in calls}
    if not ids:
        return []
    rows = Message.objects.filter(
        conversation_id=conversation_id,
        type=MessageType.TOOL_RESULT,
        metadata__run_id=run_id,
        metadata__tool=TOOL_NAME,
    ).order_by("created_at", "seq")
    results = []
    for row in rows:
        if row.metadata.get("is_error") or str(row.metadata.get("toolCallId")) not in ids:
            continue
        try:
            results.append(json.loads(row.content))
        except ValueError:
            continue  # cut at the stored size: its passages are lost, not the reply
    return results


def with_passages(messages: Sequence[ChatMessage], sources: Sequence[dict[str, Any]]) -> list[ChatMessage]:
    """``messages`` with the numbered passages added to the system prompt (a new one if none)."""
    lines = [RETRIEVE_INSTRUCTION]
    for number, source in enumerate(sources, start=1):
        where = source.get("filename") or source.get("url") or source.get("base") or ""
        heading = f"[{number}] {source.get('title') or ''}" + (f" ({where})" if where else "")
        lines.append(f"{heading.strip()}\n{source.get('text', '')}")
    block = "\n\n".join(lines)
    if messages and messages[0].role == "system":
        first = messages[0]
        merged = ChatMessage(role="system", content=f"{first.content}\n\n{block}" if first.content else block)
        return [merged, *messages[1:]]
    return [ChatMessage(role="system", content=block), *messages]
