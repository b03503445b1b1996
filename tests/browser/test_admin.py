"""The operator's admin: the live view of runs and sockets, the stop action, the provider test."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import (
    PASSWORDS,
    current_conversation_id,
    reply_locator,
    screenshot,
    send,
    sign_in,
    start_chat,
)
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def admin_sign_in(page: Any) -> None:
    page.goto("/admin/")
    page.wait_for_url(re.compile(r"/admin/login/"))
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORDS["operator"])
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))


@pytest.fixture
def operator_page(browser: Any, nexus: Any) -> Any:
    context = browser.new_context(base_url=nexus.url, viewport={"width": 1360, "height": 860})
    page = context.new_page()
    page.set_default_timeout(15_000)
    admin_sign_in(page)
    yield page
    context.close()


def test_the_live_view_shows_the_run_and_the_socket_and_the_stop_action_ends_the_run(
    nexus, page, operator_page
):
    agent = nexus.create_agent("Filibuster")
    nexus.fake.script(Reply.words(300, tokens_per_s=10))
    sign_in(page)
    start_chat(page, agent)
    send(page, "Never stop talking.")
    conversation_id = current_conversation_id(page)
    reply_locator(page).locator(".msg-text").filter(has_text="w3").wait_for()
    run_id = nexus.agent_messages(conversation_id)[0]["metadata"]["run_id"]

    admin = operator_page
    admin.goto("/admin/runs/run/live/")
    row = admin.locator(f'#live-runs tr[data-run-id="{run_id}"]')
    row.wait_for()
    assert "Filibuster" in row.text_content()
    assert "alice" in row.text_content()
    admin.locator("#live-sockets tbody tr", has_text=conversation_id).wait_for()
    admin.locator("#live-runs .live-stop").first.wait_for()  # the page has refreshed itself
    screenshot(admin, "13-admin-live")

    admin.goto("/admin/runs/run/?in_flight=yes")
    admin.check(f'input.action-select[value="{run_id}"]')
    admin.select_option("select[name=action]", "stop_runs")
    admin.click("button[name=index]")
    admin.locator(".messagelist", has_text="1 run(s) told to stop.").wait_for()
    screenshot(admin, "14-admin-stop-action")

    page.wait_for_selector('#messages .msg-agent[data-status="stopped"]')
    [stored] = nexus.agent_messages(conversation_id)
    assert stored["status"] == "stopped"
    assert stored["content"] == reply_locator(page).locator(".msg-text").text_content()
    assert "w299" not in stored["content"]

    admin.goto("/admin/runs/run/live/")
    admin.locator("#live-runs .live-empty").wait_for()


def test_the_live_view_stop_button_ends_a_run(nexus, page, operator_page):
    agent = nexus.create_agent("Rambler")
    nexus.fake.script(Reply.words(300, tokens_per_s=10))
    sign_in(page)
    start_chat(page, agent)
    send(page, "Ramble on.")
    conversation_id = current_conversation_id(page)
    reply_locator(page).locator(".msg-text").filter(has_text="w3").wait_for()
    run_id = nexus.agent_messages(conversation_id)[0]["metadata"]["run_id"]

    operator_page.goto("/admin/runs/run/live/")
    operator_page.locator(f'#live-runs tr[data-run-id="{run_id}"] .live-stop').click()
    page.wait_for_selector('#messages .msg-agent[data-status="stopped"]')
    assert nexus.agent_messages(conversation_id)[0]["status"] == "stopped"


def test_the_test_provider_action_reports_on_the_agents_provider(nexus, operator_page):
    good = nexus.create_agent("Reachable")
    missing = nexus.create_agent("Wrong model", model="no-such-model")
    admin = operator_page
    admin.goto("/admin/agents/agent/")
    for agent in (good, missing):
        admin.check(f'input.action-select[value="{agent["id"]}"]')
    admin.select_option("select[name=action]", "test_provider")
    admin.click("button[name=index]")
    messages = admin.locator(".messagelist")
    messages.wait_for()
    assert "Reachable: openai answers" in messages.text_content()  # the operator's OPENAI_BASE_URL
    assert "model fake-model is available" in messages.locator(".success").text_content()
    assert "does not list the model no-such-model" in messages.locator(".warning").text_content()
    screenshot(admin, "15-admin-test-provider")
