"""The message tree in the real Chromium, against the fake OpenAI: regenerate a reply and flip
between the versions, edit a message and resend it, continue a reply cut by the length limit.
The fake records what the provider was sent: the history follows the branch on screen."""

from __future__ import annotations

import json

import pytest

from tests.browser.conftest import reply_locator, send, sign_in, start_chat
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def sent_messages(nexus, since: int) -> list[list[dict]]:
    """The chat messages of each provider request after the first ``since``."""
    bodies = [json.loads(r.body) for r in nexus.fake.requests[since:] if r.body]
    return [body["messages"] for body in bodies if "messages" in body]


def texts(page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(f"#messages {selector} .msg-text").all_text_contents()]


def wait_settled(page, count: int) -> None:
    """``count`` agent replies on screen, none of them streaming."""
    page.wait_for_function(
        """(count) => {
          const replies = document.querySelectorAll('#messages .msg-agent');
          return replies.length === count && [...replies].every((r) => r.dataset.status !== 'streaming');
        }""",
        arg=count,
    )


def test_regenerate_keeps_both_replies_as_versions_to_flip_between(nexus, page):
    agent = nexus.create_agent("Twice")
    nexus.fake.script(Reply(text="First answer."), Reply(text="Second answer."), Reply(text="Noted."))
    sign_in(page)
    conversation_id = start_chat(page, agent)
    send(page, "Tell me something.")
    reply_locator(page).locator(".msg-text", has_text="First answer.").wait_for()
    wait_settled(page, 1)
    before = len(nexus.fake.requests)

    reply_locator(page).locator(".msg-regenerate").click()
    reply_locator(page).locator(".msg-text", has_text="Second answer.").wait_for()
    counter = reply_locator(page).locator(".sib-count")
    counter.wait_for()
    assert counter.text_content() == "2/2"
    assert texts(page, ".msg-agent") == ["Second answer."]
    # The regenerated reply was asked for with the question only, not the first answer.
    [history] = sent_messages(nexus, before)
    assert [m["role"] for m in history] == ["system", "user"]
    assert history[-1]["content"] == "Tell me something."

    # Flip back to the first version: the page and the stored active path both show it.
    reply_locator(page).locator(".sib-prev").click()
    reply_locator(page).locator(".msg-text", has_text="First answer.").wait_for()
    assert reply_locator(page).locator(".sib-count").text_content() == "1/2"
    stored = [m["content"] for m in nexus.agent_messages(conversation_id)]
    assert stored == ["First answer."]

    # The next message continues the chosen branch: the provider sees the first answer.
    before = len(nexus.fake.requests)
    send(page, "And then?")
    reply_locator(page).locator(".msg-text", has_text="Noted.").wait_for()
    [history] = sent_messages(nexus, before)
    assert [m["content"] for m in history[1:]] == ["Tell me something.", "First answer.", "And then?"]

    # After a reload the versions are still there.
    page.reload()
    page.locator("#messages .msg-agent").first.locator(".sib-count", has_text="1/2").wait_for()
    page.locator("#messages .msg-agent").first.locator(".sib-next").click()
    page.locator("#messages .msg-agent").first.locator(".msg-text", has_text="Second answer.").wait_for()
    # The later exchange belonged to the other branch: it is not on this one.
    page.wait_for_function("document.querySelectorAll('#messages .msg-agent').length === 1")
    assert texts(page, ".msg-user") == ["Tell me something."]


def test_edit_and_resend_branches_from_the_edited_message(nexus, page):
    agent = nexus.create_agent("Editor")
    nexus.fake.script(Reply(text="About cats."), Reply(text="About dogs."))
    sign_in(page)
    conversation_id = start_chat(page, agent)
    send(page, "Tell me about cats.")
    reply_locator(page).locator(".msg-text", has_text="About cats.").wait_for()
    wait_settled(page, 1)
    before = len(nexus.fake.requests)

    user = page.locator("#messages .msg-user").first
    user.locator(".msg-edit").click()
    editor = user.locator(".msg-edit-input")
    assert editor.input_value() == "Tell me about cats."
    editor.fill("Tell me about dogs.")
    user.locator(".msg-edit-send").click()

    reply_locator(page).locator(".msg-text", has_text="About dogs.").wait_for()
    page.locator("#messages .msg-user .sib-count", has_text="2/2").wait_for()
    assert texts(page, ".msg-user") == ["Tell me about dogs."]
    assert texts(page, ".msg-agent") == ["About dogs."]
    [history] = sent_messages(nexus, before)
    assert [m["content"] for m in history[1:]] == ["Tell me about dogs."]

    # The first version and its reply are one click away.
    page.locator("#messages .msg-user .sib-prev").click()
    reply_locator(page).locator(".msg-text", has_text="About cats.").wait_for()
    assert texts(page, ".msg-user") == ["Tell me about cats."]
    messages = nexus.conversation(conversation_id)["messages"]
    assert [m["content"] for m in messages] == ["Tell me about cats.", "About cats."]


def test_continue_a_reply_cut_by_the_length_limit(nexus, page):
    agent = nexus.create_agent("Long-winded")
    nexus.fake.script(
        Reply(text="The first half of the story", finish_reason="length"),
        Reply(text=" and the second half."),
    )
    sign_in(page)
    start_chat(page, agent)
    send(page, "Tell a story.")
    cut = reply_locator(page).locator(".msg-cut")
    cut.wait_for()
    before = len(nexus.fake.requests)

    cut.locator(".msg-continue").click()
    page.locator("#messages .msg-agent .msg-text", has_text="and the second half.").wait_for()
    wait_settled(page, 2)
    assert texts(page, ".msg-agent") == ["The first half of the story", "and the second half."]
    # The provider saw the cut reply as its own last turn, then the request to go on.
    [history] = sent_messages(nexus, before)
    assert history[-2] == {"role": "assistant", "content": "The first half of the story"}
    assert history[-1]["role"] == "user" and "Continue" in history[-1]["content"]
    # The continued reply ended normally: no cut-off notice, nothing more to continue; the cut
    # reply keeps its notice, but its button went (only the last reply can be continued).
    assert reply_locator(page).locator(".msg-cut").is_hidden()
    first = page.locator("#messages .msg-agent").first
    assert first.locator(".msg-cut").is_visible()
    assert first.locator(".msg-continue").is_hidden()
