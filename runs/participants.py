"""Who answers a person's conversation: the change (``conversations.services``) and its
announcement to every watcher, so each open tab shows the new agent without a reload."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction

from agents.models import Agent
from agents.selectors import agent_get_for_user
from conversations.models import Conversation
from conversations.selectors import conversation_get_for_user, conversation_participants
from conversations.services import conversation_agent_set
from core.errors import NotFound, ValidationFailed
from runs.domain_events import AgentChanged
from runs.eventlog import get_event_log
from runs.events import EventWriter


@transaction.atomic
def conversation_agent_switch(*, user: Any, conversation_id: Any, agent_id: Any) -> Conversation:
    """Make ``agent_id`` (an agent ``user`` may use) the one who answers the conversation from now on.

    Watchers get ``system`` ``{code: "agent_changed", agent_id, agents, message}`` once the change
    has committed (nothing when the agent already answers). NotFound for a conversation ``user`` may
    not see; ValidationFailed for an agent they may not use (as ``conversation_create_for_user``)."""
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    try:
        agent = agent_get_for_user(user=user, agent_id=agent_id)
    except NotFound:
        raise ValidationFailed("Unknown agent.", details={"agent_id": ["Agent not found."]}) from None
    before = [a.pk for a in conversation_participants(conversation=conversation)][:1]
    conversation_agent_set(conversation=conversation, agent=agent)
    agents = conversation_participants(conversation=conversation)
    if before != [agent.pk]:
        transaction.on_commit(lambda: async_to_sync(_announce)(conversation, agent, agents))
    return conversation


def _agent_brief(agent: Agent) -> dict[str, Any]:
    return {
        "id": str(agent.pk),
        "name": agent.name,
        "emoji": agent.emoji,
        "colour": agent.colour,
        "provider": agent.provider,
        "model": agent.model,
        "status": agent.status,
        "role": getattr(agent, "participant_role", None),
    }


async def _announce(conversation: Conversation, agent: Agent, agents: list[Agent]) -> None:
    writer = EventWriter(
        get_event_log(), str(conversation.pk), owner_id=conversation.owner_id, floor=conversation.last_seq
    )
    writer.emit(
        AgentChanged(
            message=f"{agent.name} answers from now on.",
            agent_id=str(agent.pk),
            agents=[_agent_brief(a) for a in agents],
        )
    )
    await writer.flush()
