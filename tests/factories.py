"""Factories shared by the suite's packages: the rows a test starts from, made through Nexus's own
services (never hand-built where a service exists)."""

from __future__ import annotations

from typing import Any


def make_agent(*, owner=None, name="Scripted", **config: Any):
    from agents.models import Agent

    return Agent.objects.create(
        owner=owner, name=name, provider="scripted", model="scripted-1", config=config
    )


def make_conversation(owner, *agents, session_type="human_agent", settings=None):
    from conversations.services import conversation_create

    return conversation_create(
        owner=owner,
        participants=[(agent, "primary" if i == 0 else "secondary") for i, agent in enumerate(agents)],
        session_type=session_type,
        settings=settings,
    )


def token_for(user) -> str:
    from core.auth import tokens_issue

    return tokens_issue(user)["access_token"]
