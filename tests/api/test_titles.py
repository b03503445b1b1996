"""`POST /api/conversations/{id}/generate-title/`: a short title from the first messages through
the conversation's first agent's provider; the first words of the first user message when the
provider fails; saved either way."""

from __future__ import annotations

import pytest

from agents.models import Agent
from providers.registry import registry
from tests.api.conftest import assert_error, make_conversation
from tests.api.providers_for_tests import Cut, Failing, Hanging, Titler
from tests.fakes import FakeOllama
from tests.fakes.script import Reply

pytestmark = pytest.mark.django_db

QUESTION = "What is the capital of France and why did it become the capital in the first place?"


def url(conversation) -> str:
    return f"/api/conversations/{conversation.pk}/generate-title/"


def _conversation(owner, provider: str, **config):
    agent = Agent.objects.create(name=provider, provider=provider, model=f"{provider}-1", config=config)
    return make_conversation(owner, agent, messages=(QUESTION, "Paris, since the Middle Ages."))


def test_the_title_comes_from_the_agents_provider_and_is_saved(alice, user):
    titler = Titler()
    with registry.override("titler", titler):
        conversation = _conversation(user, "titler", reply='Title: "Capital of France."\nExtra line')
        response = alice.post(url(conversation))
    assert response.status_code == 200, response.content
    assert response.json() == {"id": str(conversation.pk), "title": "Capital of France", "source": "provider"}
    conversation.refresh_from_db()
    assert conversation.title == "Capital of France"
    call = titler.calls[0]
    assert call["model"] == "titler-1"
    assert call["options"].max_tokens == 24
    assert call["messages"][0].role == "system"
    assert QUESTION in call["messages"][-1].content
    assert "Paris, since the Middle Ages." in call["messages"][-1].content
    assert "reply" in call["options"].extra  # the agent's config reached the provider


def test_a_long_answer_is_cut_to_a_short_title(alice, user):
    with registry.override("titler", Titler()):
        conversation = _conversation(user, "titler", reply="one two three four five six seven eight nine ten")
        assert alice.post(url(conversation)).json()["title"] == "one two three four five six seven eight"


@pytest.mark.parametrize("provider", [Failing(), Cut()], ids=["error", "incomplete"])
def test_a_failing_provider_falls_back_to_the_first_words(alice, user, provider):
    with registry.override(provider.name, provider):
        conversation = _conversation(user, provider.name)
        response = alice.post(url(conversation))
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "fallback"
    assert body["title"] == "What is the capital of France and why did it become the…"
    conversation.refresh_from_db()
    assert conversation.title == body["title"]


def test_a_provider_that_never_answers_falls_back_in_time(alice, user, settings):
    settings.NEXUS_TITLE_TIMEOUT = 0.3
    with registry.override("hanging", Hanging()):
        conversation = _conversation(user, "hanging")
        response = alice.post(url(conversation))
    assert response.json()["source"] == "fallback"


def test_the_real_ollama_adapter_against_a_loopback_server(alice, user, caplog):
    with FakeOllama() as server:
        server.script(Reply(text="French capital history"))
        agent = Agent.objects.create(
            name="Llama", provider="ollama", model="llama3.2", base_url=server.base_url
        )
        conversation = make_conversation(user, agent, messages=(QUESTION, "Paris."))
        with caplog.at_level("INFO", logger="nexus.conversations"):
            response = alice.post(url(conversation))
        assert response.json() == {
            "id": str(conversation.pk),
            "title": "French capital history",
            "source": "provider",
        }, caplog.text
        body = server.requests[-1].json
        assert body["model"] == "llama3.2"
        assert QUESTION in body["messages"][-1]["content"]


def test_an_unreachable_ollama_falls_back(alice, user):
    from tests.procs import free_port

    agent = Agent.objects.create(
        name="Gone", provider="ollama", model="llama3.2", base_url=f"http://127.0.0.1:{free_port()}"
    )
    conversation = make_conversation(user, agent, messages=("Plan my trip to Lisbon in May", "Sure."))
    body = alice.post(url(conversation)).json()
    assert body == {
        "id": str(conversation.pk),
        "title": "Plan my trip to Lisbon in May",
        "source": "fallback",
    }


def test_a_conversation_without_messages_cannot_be_titled(alice, user, shared_agent):
    conversation = make_conversation(user, shared_agent)
    body = assert_error(alice.post(url(conversation)), 400, "validation_error")
    assert "conversation" in body["errors"]


def test_generate_title_of_another_users_conversation_is_404(mallory, alice_conversation):
    assert_error(mallory.post(url(alice_conversation)), 404, "not_found")
    alice_conversation.refresh_from_db()
    assert alice_conversation.title == "Alice's chat"


def test_generate_title_needs_authentication(anon, alice_conversation):
    assert_error(anon.post(url(alice_conversation)), 401)


def test_staff_generate_a_title_for_any_conversation(operator, other_user):
    with registry.override("titler", Titler()):
        conversation = _conversation(other_user, "titler", reply="Moderated")
        assert operator.post(url(conversation)).json()["title"] == "Moderated"
