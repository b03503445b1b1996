"""The bundled local model (SmolLM2 135M, too weak to call tools reliably) answering from a
document in retrieve mode: a real run through the whole engine, the document among the sources."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from tests.factories import make_conversation
from tests.runs.test_knowledge_agents import _agent, _base, _reply_row

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240), pytest.mark.slow]

DOCUMENT = "# Harbour\n\nThe harbour master of Port Elling is Marta Quist. She opens the gates at dawn.\n"


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


async def test_the_local_model_answers_from_a_retrieved_document(connect, user):
    def setup():
        base = _base(user, "port", {"harbour.md": DOCUMENT, "other.md": "# Cakes\n\nBake at 180 degrees.\n"})
        agent = _agent(
            owner=user,
            bases=[base],
            mode="retrieve",
            provider="local",
            model="smollm2-135m-instruct",
            temperature=0.0,
            max_tokens=24,
            system_prompt="Answer in one short sentence.",
        )
        return make_conversation(user, agent)

    conversation = await database_sync_to_async(setup)()
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send(
        {"type": "user_message", "data": {"content": "Who is the harbour master of Port Elling?"}}
    )
    final = await client.until("agent_message", timeout=200)
    await client.until("run_finished", status="completed", timeout=30)
    # Greedy decoding (temperature 0) of the passage it was given: the name is in the answer.
    assert "Quist" in final["data"]["content"]
    sources = final["data"]["metadata"]["sources"]
    assert sources[0]["filename"] == "harbour.md" and "Marta Quist" in sources[0]["text"]
    row = await database_sync_to_async(_reply_row)(conversation.pk)
    assert row.metadata["sources"] == sources and row.metadata["provider"] == "local"
