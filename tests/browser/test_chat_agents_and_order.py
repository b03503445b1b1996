"""Who answers, and in what order: the "Answered by" picker of an open chat really switches the agent
(the history stays), and two tabs sending at once show one order, the server's."""

from __future__ import annotations

import pytest

from tests.browser.conftest import reply_locator, send, sign_in, start_chat
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_picking_another_agent_in_an_open_chat_makes_it_answer_with_the_history(nexus, page):
    ada = nexus.create_agent("Ada", system_prompt="You are Ada.")
    bo = nexus.create_agent("Bo", emoji="🐻", system_prompt="You are Bo.")
    sign_in(page)
    conversation_id = start_chat(page, ada)
    picker = page.locator("#agent-picker-select")
    assert picker.is_visible()
    assert picker.input_value() == ada["id"]

    nexus.fake.script(Reply(text="Ada here."))
    send(page, "Who are you?")
    reply_locator(page).locator(".msg-text").filter(has_text="Ada here.").wait_for()
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
    assert "You are Ada." in str(nexus.fake.requests[-1].json["messages"][0])

    picker.select_option(bo["id"])
    page.locator('#messages .msg-note[data-code="agent_changed"]').filter(has_text="Bo answers").wait_for()
    assert [a["agent_id"] for a in nexus.conversation(conversation_id)["agents"]] == [bo["id"]]

    nexus.fake.script(Reply(text="Bo speaking."))
    send(page, "And now?")
    reply_locator(page).locator(".msg-text").filter(has_text="Bo speaking.").wait_for()
    page.wait_for_selector('#messages .msg-agent[data-status="complete"] >> nth=1')
    # The reply is Bo's, on the page and in the store, and Bo was given the whole history.
    last = reply_locator(page)
    assert last.get_attribute("data-agent-id") == bo["id"]
    assert last.locator(".msg-author").text_content() == "Bo"
    assert reply_locator(page, 0).locator(".msg-author").text_content() == "Ada"
    replies = nexus.agent_messages(conversation_id)
    assert [(m["agent_id"], m["content"]) for m in replies] == [
        (ada["id"], "Ada here."),
        (bo["id"], "Bo speaking."),
    ]
    sent = nexus.fake.requests[-1].json["messages"]
    assert "You are Bo." in sent[0]["content"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "Who are you?"),
        ("assistant", "Ada here."),
        ("user", "And now?"),
    ]

    # After a reload the picker still names Bo.
    page.reload()
    page.wait_for_selector('#conn-state[data-state="connected"]')
    assert page.locator("#agent-picker-select").input_value() == bo["id"]
