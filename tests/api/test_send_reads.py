"""The reads that open a send (``runs.selectors.conversation_for_send``) and the history a
run gives its provider: the same rows as the ORM selectors, the same access rule, and a fixed
number of queries however long the conversation is (they are on the path to the first token)."""

from __future__ import annotations

import uuid

import pytest

from agents.models import Agent
from conversations.models import Participant
from conversations.selectors import conversation_get_for_user, conversation_participants
from core.errors import NotFound
from runs.history import chat_history
from runs.models import Run
from runs.selectors import conversation_for_send
from tests.api.conftest import make_conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def debate(user, shared_agent, alice_agent):
    conversation = make_conversation(user, shared_agent, messages=("hello", "hi", "how are you?"))
    # Participants inserted out of order: the speaking order comes from position.
    third = Agent.objects.create(name="Third", provider="local", model="smollm2", owner=user)
    Participant.objects.create(conversation=conversation, agent=third, role="observer", position=2)
    Participant.objects.create(conversation=conversation, agent=alice_agent, role="secondary", position=1)
    return conversation


def test_the_owner_gets_the_conversation_and_its_participants_in_speaking_order(user, debate):
    conversation, agents = conversation_for_send(user=user, conversation_id=str(debate.pk))
    expected = conversation_get_for_user(user=user, conversation_id=debate.pk)
    assert conversation.pk == expected.pk
    for field in ("owner_id", "title", "session_type", "status", "context", "settings", "last_seq"):
        assert getattr(conversation, field) == getattr(expected, field), field
    assert conversation.created_at == expected.created_at and conversation.expires_at == expected.expires_at
    assert conversation.has_active_run is False
    ordered = conversation_participants(conversation=expected)
    assert [(a.pk, a.name, a.participant_role, a.participant_position) for a in agents] == [
        (a.pk, a.name, a.participant_role, a.participant_position) for a in ordered
    ]
    assert [a.participant_position for a in agents] == [0, 1, 2]
    assert agents[0].config == ordered[0].config and agents[0].tools == ordered[0].tools


def test_an_active_run_is_seen(user, debate, shared_agent):
    Run.objects.create(conversation=debate, agent=shared_agent, status="queued")
    conversation, _ = conversation_for_send(user=user, conversation_id=debate.pk)
    assert conversation.has_active_run is True
    Run.objects.filter(conversation=debate).update(status="completed")
    conversation, _ = conversation_for_send(user=user, conversation_id=debate.pk)
    assert conversation.has_active_run is False


def test_outsiders_anonymous_callers_and_bad_ids_get_not_found(other_user, debate):
    from django.contrib.auth.models import AnonymousUser

    for caller, conversation_id in (
        (other_user, debate.pk),
        (AnonymousUser(), debate.pk),
        (other_user, uuid.uuid4()),
        (other_user, "not-a-uuid"),
    ):
        with pytest.raises(NotFound):
            conversation_for_send(user=caller, conversation_id=conversation_id)


def test_staff_reach_any_conversation(staff_user, debate):
    conversation, agents = conversation_for_send(user=staff_user, conversation_id=debate.pk)
    assert conversation.pk == debate.pk and len(agents) == 3


def test_the_history_is_one_query_however_long_the_conversation(
    user, shared_agent, django_assert_num_queries
):
    short = make_conversation(user, shared_agent, messages=("one", "two"))
    long = make_conversation(user, shared_agent, messages=tuple(f"message {n}" for n in range(40)))
    for conversation, length in ((short, 2), (long, 40)):
        with django_assert_num_queries(1):
            history = chat_history(conversation=conversation, agent=shared_agent, speakers=[shared_agent])
        turns = [m for m in history if m.role != "system"]
        assert len(turns) == length
        assert turns[-1].content == ("two" if length == 2 else "message 39")
        assert turns[-1].role == "assistant"  # the agent's own turn


def test_a_claimed_run_sees_its_message_in_place_before_its_seq_is_stored(user, shared_agent):
    """On workers the sender stores the message's seq while the worker claims the run: the claim
    places the message by the seq it was dispatched with, and writes nothing for it."""
    from conversations.models import Message
    from runs.dispatch import Handoff, claim_run

    conversation = make_conversation(user, shared_agent, messages=("one", "two"))
    trigger = Message.objects.create(conversation=conversation, role="user", content="three")
    Message.objects.create(conversation=conversation, role="user", content="four", seq=4)
    run = Run.objects.create(conversation=conversation, agent=shared_agent, trigger_message=trigger)

    claimed = claim_run(str(run.pk), "test-owner", Handoff(trigger_seq=(str(trigger.pk), 3)))

    assert [m.content for m in claimed.history if m.role != "system"] == ["one", "two", "three", "four"]
    assert claimed.trigger_seq == (str(trigger.pk), 3)
    trigger.refresh_from_db()
    assert trigger.seq is None  # stored later, with the reply's row
    run.refresh_from_db()
    assert (run.status, run.owner) == ("running", "test-owner")
    assert claim_run(str(run.pk), "another-owner") is None  # at most once


def test_a_message_without_a_seq_yet_is_the_last_of_the_history(user, shared_agent):
    from conversations.models import Message

    conversation = make_conversation(user, shared_agent, messages=("one", "two"))
    new = Message(conversation=conversation, role="user", content="three")  # this transaction's
    history = chat_history(conversation=conversation, agent=shared_agent, then=new, speakers=[shared_agent])
    assert [m.content for m in history if m.role != "system"] == ["one", "two", "three"]


def test_a_run_left_the_activity_mark_writes_it_even_when_it_cannot_start(user, shared_agent):
    from datetime import timedelta

    from django.utils import timezone

    from conversations.models import Conversation
    from runs.dispatch import Handoff, claim_run

    conversation = make_conversation(user, shared_agent, messages=("one",))
    soon = timezone.now() + timedelta(minutes=1)
    Conversation.objects.filter(pk=conversation.pk).update(expires_at=soon)
    starts = Run.objects.create(conversation=conversation, agent=shared_agent)
    assert claim_run(str(starts.pk), "owner", Handoff(touch=True)).touch is True  # written with its reply
    conversation.refresh_from_db()
    assert conversation.expires_at == soon

    stopped = Run.objects.create(conversation=conversation, agent=shared_agent, cancel_requested=True)
    Run.objects.filter(pk=starts.pk).update(status="completed")
    assert claim_run(str(stopped.pk), "owner", Handoff(touch=True)) is None
    conversation.refresh_from_db()
    assert conversation.expires_at > soon + timedelta(minutes=5)
