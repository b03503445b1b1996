"""The chat page on a phone-sized screen: a drawer for the sidebar, no sideways scrolling."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import reply_locator, screenshot, send, sign_in
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NO_SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth <= window.innerWidth"


@pytest.fixture
def phone(browser: Any, nexus: Any, problems: Any) -> Any:
    context = browser.new_context(
        base_url=nexus.url,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems.watch(page)
    yield page
    context.close()
    assert not problems.errors, problems.errors


def test_the_chat_works_on_a_phone(nexus, phone):
    agent = nexus.create_agent("Pocket")
    text = "A reply long enough to wrap over several lines on a narrow screen, " * 3
    nexus.fake.script(Reply(text=text.strip(), tokens_per_s=40))
    sign_in(phone)
    assert phone.locator("#sidebar").is_hidden()  # a closed drawer
    assert phone.evaluate(NO_SIDEWAYS_SCROLL)

    phone.tap("#sidebar-toggle")
    phone.wait_for_selector("#sidebar.is-open")
    phone.wait_for_timeout(300)  # the drawer slides in
    screenshot(phone, "16-phone-drawer")
    phone.tap(f'#agent-list [data-agent-id="{agent["id"]}"]')
    phone.tap("#new-chat")
    phone.wait_for_selector('#chat-head[data-draft="true"]')
    phone.locator("#sidebar").wait_for(state="hidden")  # a new chat closes the drawer

    send(phone, "Hello from my phone, with a long message that has to wrap as well.")
    phone.wait_for_selector('#messages .msg-agent[data-status="complete"]')
    assert reply_locator(phone).locator(".msg-text").text_content() == text.strip()
    assert phone.evaluate(NO_SIDEWAYS_SCROLL)
    composer = phone.locator("#composer").bounding_box()
    assert composer["y"] + composer["height"] <= 844 + 1  # the composer stays on screen
    screenshot(phone, "17-phone-chat")
