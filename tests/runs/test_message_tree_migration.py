"""conversations/0003_message_tree: a database from before the message tree keeps its history as
one straight branch (each person's message and reply follows the one before it in seq order; tool
calls and results belong to their run), and every run's history stays what it was."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_THE_TREE = [("conversations", "0002_run_moves_to_runs")]


def _state_as_applied():
    loader = MigrationExecutor(connection).loader
    return loader.project_state(list(loader.applied_migrations), at_end=True).apps


def test_existing_conversations_become_one_straight_branch(user):
    MigrationExecutor(connection).migrate(BEFORE_THE_TREE)
    old = _state_as_applied()
    Agent = old.get_model("agents", "Agent")
    Conversation = old.get_model("conversations", "Conversation")
    Message = old.get_model("conversations", "Message")
    agent = Agent.objects.create(name="Helper", provider="local", model="smollm2")
    ids = {}
    for label in ("a", "b"):
        conversation = Conversation.objects.create(owner_id=user.pk, title=label)
        rows = [("user", "message", 1), ("agent", "tool_call", 2), ("tool", "tool_result", 3)]
        rows += [("agent", "message", 4), ("user", "message", 5), ("agent", "message", 6)]
        ids[label] = [
            Message.objects.create(
                conversation=conversation,
                role=role,
                type=kind,
                agent=agent if role == "agent" else None,
                content=f"{label}{seq}",
                seq=seq,
            ).pk
            for role, kind, seq in rows
        ]

    loader = MigrationExecutor(connection).loader
    MigrationExecutor(connection).migrate(loader.graph.leaf_nodes())

    from conversations.models import Message as Current

    for label in ("a", "b"):
        first, call, result, answer, follow_up, last = (Current.objects.get(pk=pk) for pk in ids[label])
        assert first.parent_id is None
        assert call.parent_id is None and result.parent_id is None
        assert answer.parent_id == first.pk
        assert follow_up.parent_id == answer.pk and last.parent_id == follow_up.pk
        assert all(m.selected and not m.hidden for m in (first, call, result, answer, follow_up, last))
