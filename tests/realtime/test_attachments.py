"""Files attached to a message on the native socket (docs/files.md, "Attachments"): the frame's
``attachments`` (stored file ids) are stored with the message and their text reaches the model,
again on a regenerate; a file of another user is not found, a malformed list is a coded error."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from runs import attachments
from tests.realtime import scripted
from tests.realtime.conftest import make_agent, make_conversation

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("scripted_provider"),
]


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def _store(owner, name: str, data: bytes):
    from files.services import file_store

    return file_store(owner=owner, name=name, content=data)[0]


def _reply(conversation):
    from conversations.models import Message

    return Message.objects.filter(conversation=conversation, role="agent").latest("created_at")


def _message(pk):
    from conversations.models import Message

    return Message.objects.get(pk=pk)


async def test_attachments_are_stored_and_their_text_reaches_the_model(connect, user, other_user):
    agent = await database_sync_to_async(make_agent)(reply="Noted.", chunks=2)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    notes = await database_sync_to_async(_store)(user, "notes.md", b"# Plan\n\nShip the rocket on Tuesday.")
    theirs = await database_sync_to_async(_store)(other_user, "secret.txt", b"The vault code is 1234.")
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")

    await client.send(
        {"type": "user_message", "data": {"content": "Read this", "attachments": [str(theirs.pk)]}}
    )
    assert (await client.until("error"))["data"]["code"] == "not_found"
    await client.send({"type": "user_message", "data": {"content": "Read this", "attachments": "nope"}})
    assert (await client.until("error"))["data"]["code"] == "validation_error"

    scripted.SEEN.clear()
    await client.send(
        {"type": "user_message", "data": {"content": "Read this", "attachments": [str(notes.pk)]}}
    )
    ack = await client.until("ack")
    await client.until("run_finished")
    stored = await database_sync_to_async(_message)(ack["data"]["message_id"])
    assert stored.content == "Read this"
    assert stored.metadata["attachments"] == [
        {"file_id": str(notes.pk), "name": "notes.md", "content_type": notes.content_type, "size": notes.size}
    ]
    sent = scripted.SEEN[-1][-1]
    assert sent.role == "user" and sent.content.startswith("Read this\n\n")
    assert "Ship the rocket on Tuesday." in sent.content and "1234" not in sent.content

    # a regenerate asks again from the stored messages: the file's text is still there
    reply = await database_sync_to_async(_reply)(conversation)
    await client.send({"type": "regenerate", "data": {"message_id": str(reply.pk)}})
    await client.until("run_finished")
    assert "Ship the rocket on Tuesday." in scripted.SEEN[-1][-1].content
    await client.close()

    # a page that opens the conversation sees the references, not the text kept for the model
    again = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    state = await again.until("session_state")
    [shown] = [m for m in state["data"]["messages"] if m["id"] == ack["data"]["message_id"]]
    assert shown["metadata"]["attachments"][0]["name"] == "notes.md"
    assert "attachments_text" not in shown["metadata"]
    await again.close()


def test_the_text_is_cut_per_file_and_in_all(user, settings, tmp_path, monkeypatch):
    monkeypatch.setattr(attachments, "ATTACHMENT_FILE_CHARS", 50)
    monkeypatch.setattr(attachments, "ATTACHMENT_TOTAL_CHARS", 80)
    files = [_store(user, f"f{i}.txt", (f"file {i} " + "word " * 40).encode()) for i in range(3)]
    meta = attachments.attachments_metadata(files)
    block = meta["attachments_text"]
    assert [a["name"] for a in meta["attachments"]] == ["f0.txt", "f1.txt", "f2.txt"]
    assert block.count("<attachment ") == 3 and block.count("[... cut:") == 3
    assert "file 0" in block and "file 1" in block and "file 2" not in block  # the total ran out
