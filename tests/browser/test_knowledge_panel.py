"""The chat page's "Knowledge" panel: create a base, add files with the file input and by drag and
drop, and see each ingest task end through /ws/knowledge/ (the upload answers while the task is
queued or running: "done" reaches the page only over the socket); in Chromium, under the CSP."""

from __future__ import annotations

import pytest

from tests.browser.conftest import screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180)]

NOTES = "# Tides\n\nHigh water comes twice a day. The harbour master posts the table at noon.\n"


def test_a_base_made_in_the_page_takes_files_and_shows_their_progress(page, nexus, tmp_path):
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    sign_in(page)
    page.click("#new-base-toggle")
    page.fill("#base-form input[name=name]", "harbour")
    page.click("#base-form button[type=submit]")
    item = page.locator('#base-list .base-item[data-name="harbour"]')
    item.wait_for()
    assert "0 documents" in item.inner_text()
    # no task to follow yet: the page keeps no progress socket
    assert not [url for url in sockets if "/ws/knowledge/" in url], sockets

    notes = tmp_path / "tides.md"
    notes.write_text(NOTES)
    item.locator("input[type=file]").set_input_files(str(notes))
    item.locator('.base-task[data-status="done"]', has_text="tides.md").wait_for(timeout=60_000)
    assert [url for url in sockets if "/ws/knowledge/" in url], sockets  # opened for the task
    page.wait_for_function(
        "() => document.querySelector('#base-list .base-item[data-name=\"harbour\"]').innerText.includes('1 document')"
    )

    # drag and drop: a DataTransfer with a file, dropped on the base
    page.evaluate(
        """() => {
            const target = document.querySelector('#base-list .base-item[data-name="harbour"]');
            const data = new DataTransfer();
            data.items.add(new File(["Buoys: red to port, green to starboard."], "buoys.txt", {type: "text/plain"}));
            target.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true, cancelable: true}));
            target.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
        }"""
    )
    item.locator('.base-task[data-status="done"]', has_text="buoys.txt").wait_for(timeout=60_000)
    page.wait_for_function(
        "() => document.querySelector('#base-list .base-item[data-name=\"harbour\"]').innerText.includes('2 documents')"
    )
    screenshot(page, "knowledge-panel")

    with nexus.api() as client:
        [base] = [b for b in client.get("knowledge/bases/").json() if b["name"] == "harbour"]
        documents = client.get(f"knowledge/bases/{base['id']}/documents/").json()
    assert sorted(d["source"] for d in documents) == ["buoys.txt", "tides.md"]
    assert {d["status"] for d in documents} == {"ready"}
