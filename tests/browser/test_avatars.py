"""Agents look different: each avatar in its own colour, in the agent list and beside its replies;
agents that cannot answer (paused) listed after those that can."""

from __future__ import annotations

import pytest

from tests.browser.conftest import reply_locator, screenshot, send, sign_in, start_chat
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_avatars_have_their_agents_colours_and_paused_agents_come_last(nexus, page):
    tag = nexus.create_agent()["name"].split()[-1]  # a prefix of this test's own agents
    resting = nexus.create_agent(f"A resting {tag}", emoji="😴", colour="#ae3ec9")
    with nexus.api() as client:
        assert client.patch(f"agents/{resting['id']}/", json={"status": "paused"}).status_code == 200
    busy = nexus.create_agent(f"B busy {tag}", emoji="🐝", colour="#F59F00")
    plain = nexus.create_agent(f"C plain {tag}", emoji="🦊")  # no colour given: one of its own
    assert busy["colour"] == "#f59f00"
    assert plain["colour"].startswith("#") and len(plain["colour"]) == 7

    nexus.fake.script(Reply(text="Buzz."))
    sign_in(page)
    ids = page.locator("#agent-list [data-agent-id]").evaluate_all(
        "buttons => buttons.map(b => b.dataset.agentId)"
    )
    mine = [i for i in ids if i in {resting["id"], busy["id"], plain["id"]}]
    assert mine == [busy["id"], plain["id"], resting["id"]]  # active by name, then the paused one
    statuses = page.locator("#agent-list [data-agent-id]").evaluate_all(
        "buttons => buttons.map(b => b.dataset.status)"
    )
    first_paused = statuses.index("paused")
    assert all(status != "active" for status in statuses[first_paused:]), statuses

    def avatar_colour(selector: str) -> str:
        return page.locator(selector).first.get_attribute("data-colour")

    assert avatar_colour(f'#agent-list [data-agent-id="{busy["id"]}"] .avatar') == "#f59f00"
    assert avatar_colour(f'#agent-list [data-agent-id="{plain["id"]}"] .avatar') == plain["colour"]
    assert avatar_colour(f'#agent-list [data-agent-id="{resting["id"]}"] .avatar') == "#ae3ec9"
    shown = page.locator(f'#agent-list [data-agent-id="{busy["id"]}"] .avatar').evaluate(
        "el => getComputedStyle(el).getPropertyValue('--avatar-colour').trim()"
    )
    assert shown == "#f59f00"

    start_chat(page, busy)
    send(page, "Hello.")
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
    assert reply_locator(page).locator(".msg-head .avatar").get_attribute("data-colour") == "#f59f00"
    screenshot(page, "17-agent-avatars")
