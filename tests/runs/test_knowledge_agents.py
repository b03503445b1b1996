"""Agents answering from knowledge bases (SPEC section 10, issue 17), with the real OpenAI SDK
against the loopback fake: the model calls ``knowledge_search``, the passage of the right document
comes back, and the reply is stored and sent with that document among its sources; another user's
base is invisible to the tool, to retrieval and to the sources, even through a shared agent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async

from agents.tools import ToolContext, execute_server_tool
from core.errors import ValidationFailed
from tests.api.conftest import bearer_client
from tests.factories import make_conversation
from tests.fakes import FakeOpenAI
from tests.fakes.script import FakeToolCall, Reply

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

ZEBULON = (
    "# Project Zebulon\n\nProject Zebulon is the harbour crane upgrade.\n\n"
    "## Launch\n\nThe launch code of Project Zebulon is 4417. Keep it with the harbour master.\n"
)
GARDEN = "# Garden notes\n\nTomatoes want sun, water in the morning, and a stake when they grow.\n"
MALLORY = "# Zebulon, private\n\nThe launch code of Project Zebulon is 9999, say Mallory's secret notes.\n"


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def fake_openai(settings) -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        settings.OPENAI_BASE_URL = server.base_url
        settings.NEXUS_PROVIDER_API_KEYS = {"OPENAI_API_KEY": "sk-test"}
        yield server


def _base(owner, name: str, documents: dict[str, str]):
    from knowledge import services

    base = services.base_create(owner=owner, name=name)
    for filename, text in documents.items():
        document, _ = services.document_add_bytes(base=base, data=text.encode(), filename=filename)
        services.document_ingest(document)
    return base


@pytest.fixture
def bases(user, other_user):
    """Alice's base (the answer and a distractor) and Mallory's (a wrong answer, never to be seen)."""
    return database_sync_to_async(
        lambda: (
            _base(user, "projects", {"zebulon.md": ZEBULON, "garden.md": GARDEN}),
            _base(other_user, "secrets", {"mallory.md": MALLORY}),
        )
    )


def _agent(*, owner, bases, mode="tool", provider="openai", model="fake-model", **fields):
    from agents.models import Agent

    return Agent.objects.create(
        owner=owner,
        name="Librarian",
        provider=provider,
        model=model,
        knowledge_bases=[str(base.pk) for base in bases],
        knowledge_mode=mode,
        **fields,
    )


def _reply_row(conversation_id):
    from conversations.models import Message

    return Message.objects.filter(conversation_id=conversation_id, role="agent", type="message").latest("seq")


def _filenames(sources: list[dict[str, Any]]) -> set[str]:
    return {source["filename"] for source in sources}


async def _ask(connect, user, conversation, question: str) -> dict[str, Any]:
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": question}})
    final = await client.until("agent_message", timeout=60)
    await client.until("run_finished", status="completed")
    return {"client": client, "final": final}


async def test_the_model_calls_knowledge_search_and_the_reply_cites_the_document(
    connect, user, bases, fake_openai
):
    mine, _ = await bases()
    agent = await database_sync_to_async(_agent)(owner=user, bases=[mine])
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    fake_openai.script(
        Reply(
            text="",
            tool_calls=(
                FakeToolCall(name="knowledge_search", arguments={"query": "Zebulon launch code"}, id="c1"),
            ),
        ),
        Reply(text="The launch code is 4417 [1]."),
    )
    asked = await _ask(connect, user, conversation, "What is the launch code of Project Zebulon?")

    # Offered without being listed in the agent's tools.
    first = fake_openai.requests[0].json
    assert [tool["function"]["name"] for tool in first["tools"]] == ["knowledge_search"]
    # The tool's passage from the right document went back to the model, numbered.
    [tool_message] = [m for m in fake_openai.requests[1].json["messages"] if m["role"] == "tool"]
    result = json.loads(tool_message["content"])["result"]
    top = result["passages"][0]
    assert top["citation"] == "[1]" and top["filename"] == "zebulon.md" and "4417" in top["text"]
    assert "9999" not in tool_message["content"]  # Mallory's base is not Alice's agent's scope
    # The reply is sent and stored with its sources.
    sent = asked["final"]["data"]["metadata"]["sources"]
    assert "zebulon.md" in _filenames(sent) and "mallory.md" not in _filenames(sent)
    row = await database_sync_to_async(_reply_row)(conversation.pk)
    stored = row.metadata["sources"]
    assert stored == sent
    source = next(s for s in stored if s["filename"] == "zebulon.md")
    assert source["title"] and "4417" in source["text"] and source["source_type"] == "file"
    assert source["base"] == "projects" and set(source["score_details"]) == {"accurate", "semantic"}
    assert source["score"] > 0 and source["document_id"]
    assert len({s["chunk_id"] for s in stored}) == len(stored)  # deduplicated by chunk

    # REST serves the sources with the message.
    response = await database_sync_to_async(
        lambda: bearer_client(user).get(f"/api/conversations/{conversation.pk}/")
    )()
    assert response.status_code == 200
    [reply] = [m for m in response.json()["messages"] if m["id"] == str(row.pk)]
    assert reply["metadata"]["sources"] == stored


async def test_a_shared_agent_listing_another_users_base_never_searches_it_for_you(
    connect, user, other_user, bases, fake_openai
):
    mine, theirs = await bases()
    shared = await database_sync_to_async(_agent)(owner=None, bases=[mine, theirs])
    conversation = await database_sync_to_async(make_conversation)(user, shared)
    fake_openai.script(
        Reply(
            text="", tool_calls=(FakeToolCall(name="knowledge_search", arguments={"query": "launch code"}),)
        ),
        Reply(text="4417 [1]"),
    )
    asked = await _ask(connect, user, conversation, "The launch code?")
    sources = asked["final"]["data"]["metadata"]["sources"]
    assert "zebulon.md" in _filenames(sources) and "mallory.md" not in _filenames(sources)
    everything = json.dumps([r.json for r in fake_openai.requests])
    assert "9999" not in everything and "mallory" not in everything.lower()

    # The tool itself, for each user, through the same shared agent.
    for_alice = await execute_server_tool(
        "knowledge_search",
        {"query": "Zebulon launch code", "mode": "accurate"},
        context=ToolContext(user_id=user.pk, conversation_id=None, agent_id=str(shared.pk)),
    )
    assert not for_alice.is_error
    assert {p["base"] for p in for_alice.result["passages"]} == {"projects"}
    for_mallory = await execute_server_tool(
        "knowledge_search",
        {"query": "Zebulon launch code"},
        context=ToolContext(user_id=other_user.pk, conversation_id=None, agent_id=str(shared.pk)),
    )
    assert {p["base"] for p in for_mallory.result["passages"]} == {"secrets"}


async def test_an_agent_whose_bases_the_user_cannot_read_is_not_offered_the_tool(
    connect, user, other_user, bases, fake_openai
):
    _, theirs = await bases()
    shared = await database_sync_to_async(_agent)(owner=None, bases=[theirs])
    conversation = await database_sync_to_async(make_conversation)(user, shared)
    fake_openai.script(
        Reply(
            text="", tool_calls=(FakeToolCall(name="knowledge_search", arguments={"query": "launch code"}),)
        ),
        Reply(text="I do not know."),
    )
    asked = await _ask(connect, user, conversation, "The launch code?")
    assert "tools" not in fake_openai.requests[0].json
    # A call anyway is refused as a tool the agent does not have: nothing of Mallory's leaks.
    [tool_message] = [m for m in fake_openai.requests[1].json["messages"] if m["role"] == "tool"]
    assert "not available to this agent" in tool_message["content"]
    assert "sources" not in asked["final"]["data"]["metadata"]
    outcome = await execute_server_tool(
        "knowledge_search",
        {"query": "launch code"},
        context=ToolContext(user_id=user.pk, conversation_id=None, agent_id=str(shared.pk)),
    )
    assert outcome.is_error and "No knowledge base" in outcome.result["error"]


async def test_retrieve_mode_puts_numbered_passages_in_the_prompt_and_stores_them(
    connect, user, bases, fake_openai
):
    mine, theirs = await bases()
    agent = await database_sync_to_async(_agent)(
        owner=None, bases=[mine, theirs], mode="retrieve", system_prompt="You are the harbour's librarian."
    )
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    fake_openai.script(Reply(text="The launch code is 4417 [1]."))
    asked = await _ask(connect, user, conversation, "What is the launch code of Project Zebulon?")
    [request] = fake_openai.requests
    assert "tools" not in request.json  # retrieve mode offers no tool
    system = request.json["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You are the harbour's librarian.")
    assert "[1] " in system["content"] and "4417" in system["content"] and "cite" in system["content"]
    assert "9999" not in json.dumps(request.json)
    sources = asked["final"]["data"]["metadata"]["sources"]
    assert sources[0]["filename"] == "zebulon.md" and "mallory.md" not in _filenames(sources)
    row = await database_sync_to_async(_reply_row)(conversation.pk)
    assert row.metadata["sources"] == sources


async def test_retrieve_mode_keeps_only_the_passages_the_window_has_room_for(
    connect, user, fake_openai, settings
):
    long_text = "# Manual\n\n" + "\n\n".join(
        f"## Part {i}\n\nThe harbour crane part {i} needs oil and " + "careful checks " * 60 for i in range(6)
    )
    base = await database_sync_to_async(lambda: _base(user, "manual", {"manual.md": long_text}))()
    agent = await database_sync_to_async(_agent)(
        owner=user, bases=[base], mode="retrieve", context_window=512, max_tokens=64
    )
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    fake_openai.script(Reply(text="Oil it."))
    asked = await _ask(connect, user, conversation, "How is the harbour crane oiled?")
    sources = asked["final"]["data"]["metadata"].get("sources", [])
    [request] = fake_openai.requests
    prompt = request.json["messages"][0]["content"] if request.json["messages"][0]["role"] == "system" else ""
    # Fewer passages than were found (4) fit a 512-token window; each kept one is in the prompt.
    assert 1 <= len(sources) < 4
    for number, source in enumerate(sources, start=1):
        assert f"[{number}]" in prompt and source["text"][:80] in prompt


def test_an_agent_lists_only_bases_its_owner_may_read(user, other_user):
    from agents.services import agent_create, agent_update
    from knowledge import services

    mine = services.base_create(owner=user, name="mine")
    theirs = services.base_create(owner=other_user, name="theirs")
    with pytest.raises(ValidationFailed) as refused:
        agent_create(owner=user, name="A", model="m", knowledge_bases=[str(theirs.pk)])
    assert "knowledge_bases" in refused.value.details
    with pytest.raises(ValidationFailed):
        agent_create(owner=user, name="A", model="m", knowledge_bases=["not-an-id"])
    agent = agent_create(
        owner=user, name="A", model="m", knowledge_bases=[str(mine.pk)], knowledge_mode="retrieve"
    )
    assert agent.knowledge_bases == [str(mine.pk)] and agent.knowledge_mode == "retrieve"
    with pytest.raises(ValidationFailed):
        agent_update(agent=agent, knowledge_bases=[str(mine.pk), str(theirs.pk)])
    with pytest.raises(ValidationFailed):
        agent_update(agent=agent, knowledge_mode="sometimes")
    # A base deleted since is dropped quietly when the list is written again.
    services.base_delete(base=mine)
    agent.refresh_from_db()
    assert agent_update(agent=agent, knowledge_bases=agent.knowledge_bases).knowledge_bases == []


def test_the_rest_agent_form_takes_knowledge_fields(user, other_user):
    from knowledge import services

    mine = services.base_create(owner=user, name="mine")
    theirs = services.base_create(owner=other_user, name="theirs")
    client = bearer_client(user)
    body = {
        "name": "Reader",
        "model": "smollm2",
        "knowledge_bases": [str(theirs.pk)],
        "knowledge_mode": "tool",
    }
    refused = client.post("/api/agents/", body, format="json")
    assert refused.status_code == 400 and "knowledge_bases" in json.dumps(refused.json())
    created = client.post("/api/agents/", {**body, "knowledge_bases": [str(mine.pk)]}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["knowledge_bases"] == [str(mine.pk)] and created.json()["knowledge_mode"] == "tool"
    bad_mode = client.patch(f"/api/agents/{created.json()['id']}/", {"knowledge_mode": "x"}, format="json")
    assert bad_mode.status_code == 400


def test_an_imported_configuration_keeps_only_the_bases_the_importer_may_read(user, other_user):
    from knowledge import services

    mine = services.base_create(owner=user, name="mine")
    theirs = services.base_create(owner=other_user, name="theirs")
    agent = {
        "name": "Importer",
        "provider": "openai",
        "model": "m",
        "knowledge_bases": [str(mine.pk), str(theirs.pk)],
        "knowledge_mode": "retrieve",
    }
    saved = bearer_client(user).post("/api/config/save_config", {"agents": [agent]}, format="json")
    assert saved.status_code == 200, saved.content
    assert any("knowledge_bases" in note for note in saved.json()["notes"])
    [exported] = bearer_client(user).get("/api/config/load_config").json()["config"]["agents"]
    assert exported["knowledge_bases"] == [str(mine.pk)] and exported["knowledge_mode"] == "retrieve"
