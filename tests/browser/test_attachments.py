"""Attaching a file to a message in the real Chromium (docs/files.md, "Attachments"): the paperclip
uploads it through /api/files/, the message shows its chip (also after a reload), and the file's
text reaches the model."""

from __future__ import annotations

import pytest

from tests.browser.conftest import current_conversation_id, reply_locator, send, sign_in, start_chat
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_file_attached_with_the_paperclip_reaches_the_model_and_shows_as_a_chip(nexus, page, tmp_path):
    agent = nexus.create_agent("Reader")
    nexus.fake.script(Reply(text="It says the meeting moved."))
    sign_in(page)
    start_chat(page, agent)
    note = tmp_path / "memo.txt"
    note.write_text("The meeting moved to Thursday at ten.")
    page.set_input_files("#attach-input", str(note))
    page.locator("#attach-chips .attach-chip", has_text="memo.txt").wait_for()
    send(page, "What does the memo say?")
    reply_locator(page).locator(".msg-text", has_text="It says the meeting moved.").wait_for()
    assert page.locator("#attach-chips").is_hidden()  # the composer's files went with the message
    chip = page.locator("#messages .msg-user .attach-chip", has_text="memo.txt")
    assert chip.count() == 1

    sent = nexus.fake.requests[-1].json
    last_user = [m for m in sent["messages"] if m["role"] == "user"][-1]["content"]
    assert last_user.startswith("What does the memo say?")
    assert "The meeting moved to Thursday at ten." in last_user

    conversation_id = current_conversation_id(page)
    [stored] = [m for m in nexus.conversation(conversation_id)["messages"] if m["role"] == "user"]
    assert [a["name"] for a in stored["metadata"]["attachments"]] == ["memo.txt"]
    page.reload()
    page.locator("#messages .msg-user .attach-chip", has_text="memo.txt").wait_for()
