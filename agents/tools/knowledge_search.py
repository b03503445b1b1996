"""`knowledge_search`: passages from the knowledge bases the agent lists and its user may read."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from agents.knowledge import knowledge_scope, source_of
from agents.models import Agent
from agents.tools.base import ToolContext, ToolError, ToolOutcome
from knowledge.search import MODES, search

NAME = "knowledge_search"
DEFAULT_TOP_K = 5
MAX_TOP_K = 10


def _scope(context: ToolContext) -> list[Any]:
    agent = Agent.objects.filter(pk=context.agent_id).first() if context.agent_id else None
    return [] if agent is None else knowledge_scope(agent, context.user_id)


class KnowledgeSearchTool:
    name = NAME
    description = (
        "Search the knowledge bases (documents) available to you for passages about `query`. "
        "Returns numbered passages with their title, text and file; cite them as [1], [2] in your "
        "answer. Use it before answering questions about the user's documents."
    )
    parameters = {
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "minLength": 1,
                "maxLength": 1000,
                "description": "What to look for, in words likely to appear in the passage.",
            },
            "top_k": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_TOP_K,
                "description": f"How many passages (default {DEFAULT_TOP_K}).",
            },
            "mode": {
                "type": "string",
                "enum": list(MODES),
                "description": "accurate (words), semantic (meaning) or hybrid (both; the default).",
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    }

    async def __call__(self, arguments: dict[str, Any], *, context: ToolContext) -> ToolOutcome:
        """The best passages, numbered ``[1]``..; an empty list when nothing matched."""
        query = arguments["query"].strip()
        if not query:
            raise ToolError("query is empty: say what to look for.")
        bases = await database_sync_to_async(_scope)(context)
        if not bases:
            raise ToolError("No knowledge base is available to this agent for this user.")
        hits = await search(
            bases, query, mode=arguments.get("mode", "hybrid"), top_k=arguments.get("top_k", DEFAULT_TOP_K)
        )
        passages = []
        for number, hit in enumerate(hits, start=1):
            passages.append({"citation": f"[{number}]", **source_of(hit)})
        return ToolOutcome(result={"query": query, "passages": passages})
