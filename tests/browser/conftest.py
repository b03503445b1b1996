"""Browser tests: the system Chromium, driven by Playwright, against a real daphne.

One daphne (with a migrated SQLite database in a temporary NEXUS_VAR_DIR) and one fake OpenAI
server (a subprocess speaking OpenAI's real SSE wire format) serve the whole session. Agents use the
real ``openai`` provider, whose operator URL (``OPENAI_BASE_URL``) is the fake, so replies stream
slowly and exactly as scripted; ordinary users' agents name no ``base_url`` or key variable (only
staff may). Each test scripts the fake's next replies.

Without /usr/bin/chromium these tests skip, except in CI (``CI=true``) where they fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import IN_CI
from tests.fakes.process import FakeServerProcess
from tests.procs import ROOT, Process, base_env, free_port, manage, start_daphne

CHROMIUM = Path(os.environ.get("NEXUS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# A test run leaves the checkout clean: screenshots go to var/ (ignored by git) unless
# NEXUS_UPDATE_SCREENSHOTS=1 asks to refresh the published ones in docs/screenshots/.
UPDATE_SCREENSHOTS = os.environ.get("NEXUS_UPDATE_SCREENSHOTS", "") == "1"
SCREENSHOTS = ROOT / "docs" / "screenshots" if UPDATE_SCREENSHOTS else ROOT / "var" / "screenshots"
PASSWORDS = {"alice": "alice-browser-password-1", "operator": "operator-browser-password-1"}
MODEL = "fake-model"

CREATE_USERS = """
from django.contrib.auth import get_user_model
User = get_user_model()
User.objects.create_user("alice", password="{alice}")
User.objects.create_user("operator", password="{operator}", is_staff=True, is_superuser=True)
""".format(**PASSWORDS)


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"Chromium is not installed at {CHROMIUM}"
    if IN_CI:
        pytest.fail(f"{message}; the browser tests are mandatory in CI")
    pytest.skip(message)


@dataclass
class Nexus:
    """The running server, its fake OpenAI upstream, and a REST client per user."""

    url: str
    fake: FakeServerProcess
    daphne: Process
    _tokens: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # the server's environment (manage.py shell)

    def api(self, username: str = "alice") -> httpx.Client:
        token = self._tokens.get(username)
        if token is None:
            response = httpx.post(
                f"{self.url}/api/auth/login",
                json={"username": username, "password": PASSWORDS[username]},
                timeout=10,
            )
            response.raise_for_status()
            token = self._tokens[username] = response.json()["access_token"]
        return httpx.Client(
            base_url=f"{self.url}/api/", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def create_agent(
        self, name: str | None = None, *, username: str = "alice", **fields: Any
    ) -> dict[str, Any]:
        body = {
            "name": name or f"Scribe {uuid.uuid4().hex[:6]}",
            "emoji": "🦉",
            "provider": "openai",
            "model": MODEL,
            "system_prompt": "You are a test agent.",
            **fields,
        }
        with self.api(username) as client:
            response = client.post("agents/", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def conversation(self, conversation_id: str, *, username: str = "alice") -> dict[str, Any]:
        with self.api(username) as client:
            response = client.get(f"conversations/{conversation_id}/")
        assert response.status_code == 200, response.text
        return response.json()

    def agent_messages(self, conversation_id: str) -> list[dict[str, Any]]:
        messages = self.conversation(conversation_id)["messages"]
        return [m for m in messages if m["role"] == "agent" and m["type"] == "message"]


# Package scope, not session: sync Playwright keeps an event loop running in the main thread while
# it is open, and every async test after it would fail ("Runner.run() cannot be called from a
# running event loop"). pytest-django runs the browser tests together, so they share one browser.
@pytest.fixture(scope="package")
def nexus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nexus]:
    require_chromium()
    with serve_nexus(tmp_path_factory.mktemp("nexus-browser")) as server:
        yield server


@contextlib.contextmanager
def serve_nexus(var_dir: Path, **overrides: str) -> Iterator[Nexus]:
    """A daphne and its fake OpenAI upstream, with the browser tests' environment plus
    ``overrides`` (e.g. a short ``NEXUS_CONVERSATION_IDLE_SECONDS`` for one module's own server)."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    fake = FakeServerProcess("openai").start()
    try:
        env = base_env(
            NEXUS_VAR_DIR=str(var_dir),
            DJANGO_SECRET_KEY="browser-tests-secret-key-" + uuid.uuid4().hex,
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            NEXUS_WS_ALLOWED_ORIGINS=origin,
            # The operator's key and URL: the key is bound to the URL's host (the fake).
            OPENAI_API_KEY="test",
            # Provider status checks must never leave this machine.
            OPENAI_BASE_URL=fake.base_url,
            NEXUS_EGRESS_ALLOW="127.0.0.1,::1",
            GEMINI_BASE_URL=f"http://127.0.0.1:{free_port()}",
            OLLAMA_BASE_URL=f"http://127.0.0.1:{free_port()}",
            NEXUS_PROVIDER_STATUS_TIMEOUT="1",
            # Many sign-ins and page loads by the same few users in a few minutes.
            NEXUS_THROTTLE_LOGIN="1000/min",
            NEXUS_THROTTLE_CONVERSATION_CREATE="1000/min",
            NEXUS_THROTTLE_CONVERSATION_READ="1000/min",
            NEXUS_THROTTLE_AGENT_OPS="1000/min",
            NEXUS_THROTTLE_PROVIDERS="1000/min",
            NEXUS_RUNS_PER_MINUTE_PER_USER="1000",
            NEXUS_WS_MAX_SOCKETS_PER_USER="20",
        )
        env.update(overrides)
        for args in (("migrate", "--noinput"), ("shell", "-c", CREATE_USERS)):
            result = manage(*args, env=env)
            assert result.returncode == 0, result.stdout + result.stderr
        daphne, _ = start_daphne(env=env, log_dir=var_dir, port=port)
        try:
            yield Nexus(url=origin, fake=fake, daphne=daphne, env=dict(env))
        finally:
            daphne.stop()
    finally:
        fake.stop()


@pytest.fixture(scope="package")
def browser(nexus: Nexus) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class PageProblems:
    """Uncaught script errors and Content-Security-Policy violations seen by a page."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Any) -> None:
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console: {msg.text}")
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )


@pytest.fixture
def problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
def context(browser: Any, nexus: Nexus) -> Iterator[Any]:
    ctx = browser.new_context(
        base_url=nexus.url,
        viewport={"width": 1280, "height": 820},
        timezone_id="Europe/Paris",
        locale="en-GB",
    )
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: Any, problems: PageProblems) -> Iterator[Any]:
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems.watch(page)
    yield page
    assert not problems.errors, problems.errors


def sign_in(page: Any, username: str = "alice") -> None:
    """Open /, get sent to the sign-in page, sign in, and wait for the chat page to be ready."""
    page.goto("/")
    page.wait_for_url(re.compile(r"/login/\?next=/$"))
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORDS[username])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    page.wait_for_selector("body[data-ready=true]")


def screenshot(page: Any, name: str, *, full_page: bool = False) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def start_chat(page: Any, agent: dict[str, Any]) -> None:
    """Pick ``agent`` in the sidebar and press New chat: an empty composer bound to it. Nothing is
    stored until the first message (``send``); ``current_conversation_id`` then names it."""
    page.click(f'#agent-list [data-agent-id="{agent["id"]}"]')
    page.click("#new-chat")
    page.wait_for_selector(f'#chat-head[data-draft="true"] [data-agent-id="{agent["id"]}"]')
    page.locator("#composer-input").wait_for()


def current_conversation_id(page: Any) -> str:
    """The open conversation's id, once it exists (a new chat's first message creates it), with
    its socket connected."""
    page.wait_for_url(re.compile(r"#c=[0-9a-f-]{36}$"))
    page.wait_for_selector('#conn-state[data-state="connected"]')
    return page.url.rsplit("#c=", 1)[1]


def send(page: Any, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")


def reply_locator(page: Any, index: int = -1) -> Any:
    replies = page.locator("#messages .msg-agent")
    return replies.nth(index) if index >= 0 else replies.last


COUNT_TEXT_UPDATES = """
() => {
  // Count the distinct texts the newest agent reply shows while it is still streaming.
  window.__updates = [];
  const list = document.getElementById("messages");
  const observer = new MutationObserver(() => {
    const replies = list.querySelectorAll(".msg-agent");
    const last = replies[replies.length - 1];
    if (!last || last.dataset.status !== "streaming") return;
    const text = last.querySelector(".msg-text").textContent;
    if (text && window.__updates[window.__updates.length - 1] !== text) window.__updates.push(text);
  });
  observer.observe(list, { childList: true, subtree: true, characterData: true, attributes: true });
}
"""


@contextlib.contextmanager
def no_dialogs(page: Any) -> Iterator[list[str]]:
    """Collect every dialog (alert, confirm, prompt) the page opens; dismiss them."""
    seen: list[str] = []

    def on_dialog(dialog: Any) -> None:
        seen.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield seen
    finally:
        page.remove_listener("dialog", on_dialog)
