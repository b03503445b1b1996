"""Replies rendered as Markdown, safely: highlighted code, copy buttons, raw HTML kept inert, and
a reply cut by the length limit said in words. In the real Chromium, against the fake OpenAI."""

from __future__ import annotations

import pytest

from tests.browser.conftest import no_dialogs, reply_locator, send, sign_in, start_chat
from tests.fakes.script import Reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CODE = 'def add(a, b):\n    """Sum."""\n    return a + b'
TAIL = " ".join(f"after{i}" for i in range(40))
CODE_REPLY = f"Here is **the** function:\n\n```python\n{CODE}\n```\n\n{TAIL}"


@pytest.fixture
def clipboard(context, nexus):
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=nexus.url)


def read_clipboard(page) -> str:
    return page.evaluate("navigator.clipboard.readText()")


def test_a_fenced_code_block_is_highlighted_while_streaming_and_copied_by_its_button(nexus, page, clipboard):
    agent = nexus.create_agent("Coder")
    nexus.fake.script(Reply(text=CODE_REPLY, tokens_per_s=12))
    sign_in(page)
    start_chat(page, agent)
    send(page, "Write an add function.")

    reply = reply_locator(page)
    # Rendered progressively: the highlighted block is there before the reply ends.
    reply.locator("pre code.hljs.language-python .hljs-keyword").first.wait_for()
    assert reply.get_attribute("data-status") == "streaming"
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')

    assert reply.locator(".msg-text strong").text_content() == "the"
    code = reply.locator(".msg-text pre code")
    assert code.count() == 1
    assert code.text_content() == CODE
    keywords = code.locator(".hljs-keyword").all_text_contents()
    assert "def" in keywords and "return" in keywords
    assert code.locator(".hljs-string").first.text_content() == '"""Sum."""'
    assert reply.locator(".code-lang").text_content() == "python"

    reply.locator(".copy-code").click()
    reply.locator('.copy-code[data-copied="true"]').wait_for()
    assert read_clipboard(page) == CODE

    reply.locator(".msg-foot .copy-msg").click()
    reply.locator('.msg-foot .copy-msg[data-copied="true"]').wait_for()
    assert read_clipboard(page) == CODE_REPLY  # the raw Markdown, not the rendered text

    # The stored reply renders the same after a reload.
    page.reload()
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
    assert reply_locator(page).locator("pre code.language-python .hljs-keyword").count() >= 2


def test_a_persons_message_is_plain_text_with_its_line_breaks_and_copies_as_typed(nexus, page, clipboard):
    agent = nexus.create_agent("Listener")
    nexus.fake.script(Reply(text="Noted."))
    sign_in(page)
    start_chat(page, agent)
    typed = "first line\n*not emphasis* and <b>not bold</b>\n    indented"
    send(page, typed)
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]')

    mine = page.locator("#messages .msg-user").last
    assert mine.locator(".msg-text").text_content() == typed
    assert mine.locator(".msg-text em, .msg-text b").count() == 0
    assert mine.locator(".msg-text").evaluate("el => getComputedStyle(el).whiteSpace") == "pre-wrap"
    mine.locator(".copy-msg").click()
    mine.locator('.copy-msg[data-copied="true"]').wait_for()
    assert read_clipboard(page) == typed


XSS = (
    "Try [this link](javascript:alert(1)) and ![a picture](x)\n\n"
    "<img src=x onerror=alert(2)>\n\n"
    "<script>alert(3)</script>\n\n"
    '<a href="javascript:alert(4)">html link</a> <svg onload=alert(5)></svg> '
    "<iframe src=javascript:alert(6)></iframe>\n\n"
    "[ok](https://example.org/page)"
)


def test_html_and_script_urls_in_a_markdown_reply_execute_nothing(nexus, page):
    agent = nexus.create_agent("Trickster")
    nexus.fake.script(Reply(text=XSS, tokens_per_s=30))
    with no_dialogs(page) as dialogs:
        sign_in(page)
        start_chat(page, agent)
        send(page, "Try to break the page.")
        page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
        for attempt in ("live", "reloaded"):
            reply = reply_locator(page)
            text = reply.locator(".msg-text")
            assert (
                page.locator(
                    "#messages img, #messages script, #messages svg:not(.icon), #messages iframe"
                ).count()
                == 0
            )
            # Raw HTML is shown as the text it is.
            assert "<img src=x onerror=alert(2)>" in text.text_content(), attempt
            assert "<script>alert(3)</script>" in text.text_content(), attempt
            hrefs = text.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
            assert not [h for h in hrefs if h and h.strip().lower().startswith("javascript:")], hrefs
            assert "https://example.org/page" in hrefs  # an ordinary link stays a link...
            ok = text.locator('a[href="https://example.org/page"]')
            assert ok.get_attribute("target") == "_blank"  # ...opening apart from the chat
            assert "noopener" in ok.get_attribute("rel")
            # The picture is a link to it, not an <img> that would fetch it.
            assert text.locator("a", has_text="a picture").count() == 1
            if attempt == "live":
                page.reload()
                page.wait_for_selector('#messages .msg-agent[data-status="complete"]')
        page.wait_for_timeout(500)  # give any handler every chance to fire
    assert dialogs == []


def test_a_reply_cut_by_the_length_limit_says_so_in_words(nexus, page):
    agent = nexus.create_agent("Rambler")
    nexus.fake.script(Reply(text="This goes on and on and", finish_reason="length"))
    sign_in(page)
    start_chat(page, agent)
    send(page, "Talk.")
    reply = reply_locator(page)
    cut = reply.locator(".msg-cut")
    cut.wait_for()
    assert cut.locator(".msg-cut-text").text_content() == "The reply was cut off at the length limit."
    assert cut.get_attribute("data-finish") == "length"
    assert "length" not in reply.locator(".msg-meta").text_content()

    page.reload()
    page.wait_for_selector("#messages .msg-agent .msg-cut")
    assert reply_locator(page).locator(".msg-cut-text").text_content() == (
        "The reply was cut off at the length limit."
    )

    # A reply that ends normally has no such line.
    nexus.fake.script(Reply(text="Short and complete."))
    send(page, "Again, briefly.")
    page.locator("#messages .msg-agent").nth(1).locator(
        ".msg-text", has_text="Short and complete."
    ).wait_for()
    page.wait_for_selector('#messages .msg-agent:nth-of-type(4)[data-status="complete"]')
    assert reply_locator(page).locator(".msg-cut").is_hidden()


COUNT_RENDERS = """
() => {
  // Count the renders of the newest reply's text (each one replaces all its children) while it streams.
  window.__renders = 0;
  const list = document.getElementById("messages");
  const observer = new MutationObserver((records) => {
    for (const record of records) {
      const el = record.target;
      if (el.classList && el.classList.contains("msg-text") && el.closest(".msg-agent[data-status=streaming]")) {
        if (record.addedNodes.length || record.removedNodes.length) window.__renders += 1;
      }
    }
  });
  observer.observe(list, { childList: true, subtree: true });
}
"""


def test_a_fast_long_reply_is_rendered_at_most_once_per_frame_not_once_per_chunk(nexus, page):
    agent = nexus.create_agent("Torrent")
    nexus.fake.script(Reply.words(600, tokens_per_s=600))
    chunks: list[int] = []

    def watch(ws):
        ws.on("framereceived", lambda payload: chunks.append(str(payload).count('"streaming_chunk"')))

    page.on("websocket", watch)
    sign_in(page)
    start_chat(page, agent)
    page.evaluate(COUNT_RENDERS)
    send(page, "Pour it out.")
    page.wait_for_selector('#messages .msg-agent[data-status="complete"]', timeout=30_000)

    received = sum(chunks)
    renders = page.evaluate("window.__renders")
    assert received >= 100, received  # the reply really came in many chunks
    assert 2 <= renders < received / 3, (renders, received)
    shown = reply_locator(page).locator(".msg-text").text_content()
    assert shown.startswith("w0 w1 w2") and shown.endswith("w599")
