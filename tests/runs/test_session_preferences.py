"""A session's model/temperature preferences (seed 004's ``preferences``): stored checked, applied
to each run where its agent allows them, on the worker's claim path as on the inline one."""

from __future__ import annotations

import pytest

from agents.preferences import agent_apply_preferences
from conversations.services import conversation_preferences_set
from core.errors import ValidationFailed
from runs.models import Run
from tests.factories import make_agent, make_conversation

pytestmark = pytest.mark.django_db


def test_a_model_the_agent_lists_and_a_temperature_in_range_apply():
    agent = make_agent(allowed_models=["gpt-4"])
    agent_apply_preferences(agent, {"model": "gpt-4", "temperature": 1.5})
    assert (agent.model, agent.temperature) == ("gpt-4", 1.5)


def test_a_model_the_agent_does_not_list_is_not_applied_but_the_temperature_is():
    agent = make_agent()  # no allowed_models: its own model only
    agent_apply_preferences(agent, {"model": "gpt-4", "temperature": 0})
    assert (agent.model, agent.temperature) == ("scripted-1", 0.0)


def test_it_refuses_a_model_no_agent_of_the_session_allows_and_stores_nothing(user):
    conversation = make_conversation(user, make_agent(owner=user, allowed_models=["gpt-4"]))
    with pytest.raises(ValidationFailed) as refused:
        conversation_preferences_set(conversation=conversation, preferences={"model": "claude-3-opus"})
    assert refused.value.details["allowed_models"] == ["scripted-1", "gpt-4"]
    with pytest.raises(ValidationFailed):
        conversation_preferences_set(conversation=conversation, preferences={"temperature": 2.5})
    conversation.refresh_from_db()
    assert "model" not in conversation.settings and "temperature" not in conversation.settings


def test_it_refuses_allowed_models_that_are_not_a_list_of_names(user):
    from agents.services import agent_create_for_user

    with pytest.raises(ValidationFailed) as refused:
        agent_create_for_user(user=user, name="A", model="m", config={"allowed_models": "gpt-4"})
    assert "allowed_models" in refused.value.details["config"][0]
    agent = agent_create_for_user(user=user, name="B", model="m", config={"allowed_models": ["gpt-4"]})
    assert agent.config["allowed_models"] == ["gpt-4"]


def test_a_claimed_run_answers_with_the_sessions_model_and_temperature(user):
    from runs.dispatch import claim_run

    agent = make_agent(owner=user, allowed_models=["gpt-4"])
    conversation = make_conversation(user, agent)
    conversation_preferences_set(
        conversation=conversation, preferences={"model": "gpt-4", "temperature": 0.2}
    )
    run = Run.objects.create(conversation=conversation, agent=agent)

    claimed = claim_run(str(run.pk), "test-owner")

    assert (claimed.agent.model, claimed.agent.temperature) == ("gpt-4", 0.2)
    agent.refresh_from_db()
    assert (agent.model, agent.temperature) == ("scripted-1", None)  # the agent itself is unchanged


def test_a_new_conversation_takes_only_a_model_its_agents_allow(user):
    agent = make_agent(owner=user, allowed_models=["gpt-4"])
    assert make_conversation(user, agent, settings={"model": "gpt-4"}).settings["model"] == "gpt-4"
    with pytest.raises(ValidationFailed) as refused:
        make_conversation(user, agent, settings={"model": "claude-3-opus"})
    assert refused.value.details["allowed_models"] == ["scripted-1", "gpt-4"]
