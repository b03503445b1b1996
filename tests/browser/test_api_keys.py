"""The chat page's "API keys" panel (docs/v1.md): create a key (its secret shown once), use it
with the official ``openai`` SDK, and revoke it; in Chromium, under the page's CSP."""

from __future__ import annotations

import re

import openai
import pytest

from tests.browser.conftest import screenshot, sign_in
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180)]


def test_a_key_made_in_the_page_works_once_shown_and_stops_when_revoked(page, nexus):
    nexus.fake.reset()
    agent = nexus.create_agent()
    sign_in(page)
    page.click("#new-key-toggle")
    page.fill("#key-form input[name=name]", "browser key")
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#key-secret:not([hidden])")
    secret = page.inner_text("#key-secret-value").strip()
    assert re.fullmatch(r"nx-[0-9a-f]{12}\.[A-Za-z0-9_-]{43}", secret), secret
    item = page.locator("#key-list .key-item", has_text="browser key")
    assert item.get_attribute("data-status") == "active"
    assert secret not in page.inner_text("#key-list")  # the list shows the prefix only
    screenshot(page, "api-keys")
    page.click("#key-secret [data-action=dismiss]")
    assert page.locator("#key-secret").is_hidden() and page.inner_text("#key-secret-value") == ""

    nexus.fake.script(Reply(text="Hello from the page's key."))
    client = openai.OpenAI(base_url=f"{nexus.url}/v1", api_key=secret, max_retries=0, timeout=30)
    reply = client.chat.completions.create(model=agent["id"], messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "Hello from the page's key."

    page.once("dialog", lambda dialog: dialog.accept())
    item.locator("button", has_text="Revoke").click()
    page.wait_for_selector('#key-list .key-item[data-status="revoked"]')
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
