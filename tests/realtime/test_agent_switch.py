"""Changing who answers a person's conversation: every socket watching it hears ``agent_changed``
with the new agents, and the next message is answered by the new agent."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from runs.participants import conversation_agent_switch
from tests.realtime.conftest import make_agent, make_conversation

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("scripted_provider"),
]


async def test_watchers_hear_the_change_and_the_new_agent_answers(connect, user):
    ada = await database_sync_to_async(make_agent)(owner=user, name="Ada", reply="Ada here.", chunks=1)
    bo = await database_sync_to_async(make_agent)(owner=user, name="Bo", reply="Bo here.", chunks=1)
    conversation = await database_sync_to_async(make_conversation)(user, ada)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    await client.send({"type": "user_message", "data": {"content": "Who are you?"}})
    assert (await client.until("agent_message"))["data"]["content"] == "Ada here."
    await client.until("run_finished")

    await database_sync_to_async(conversation_agent_switch)(
        user=user, conversation_id=conversation.pk, agent_id=bo.pk
    )
    changed = await client.until("system")
    assert changed["data"]["code"] == "agent_changed"
    assert changed["data"]["agent_id"] == str(bo.pk)
    assert [a["name"] for a in changed["data"]["agents"]] == ["Bo"]
    assert isinstance(changed["seq"], int)

    await client.send({"type": "user_message", "data": {"content": "And now?"}})
    reply = await client.until("agent_message")
    assert (reply["data"]["agent_id"], reply["data"]["content"]) == (str(bo.pk), "Bo here.")
    await client.until("run_finished")


async def test_picking_the_agent_who_already_answers_announces_nothing(connect, user):
    ada = await database_sync_to_async(make_agent)(owner=user, name="Ada", reply="ok", chunks=1)
    conversation = await database_sync_to_async(make_conversation)(user, ada)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    await database_sync_to_async(conversation_agent_switch)(
        user=user, conversation_id=conversation.pk, agent_id=ada.pk
    )
    await client.send({"type": "user_message", "data": {"content": "hi"}})
    frames = []
    while True:
        frame = await client.recv()
        frames.append(frame["type"])
        if frame["type"] == "run_finished":
            break
    assert "system" not in frames, frames
