"""A reply longer than a frame may be, through the production topology (real daphne, workers,
Redis, PostgreSQL).

Before: a reply over daphne's 4 MiB WebSocket message limit made frames daphne could not send
(its ``agent_message`` with the whole text, chunks merged while the path was busy, the
``session_state`` of a later client): the socket's sender failed (an ``internal`` error frame),
the 1011 close it then asked for was refused by autobahn, and the socket stayed open with
nothing more delivered, on every resume too.

Now (docs/protocol.md, "Frame size"): a reply stops at ``NEXUS_MAX_REPLY_CHARS`` (1,000,000
characters: ``incomplete``, finish reason ``length``, an ``info`` ``reply_too_long``), no frame is
larger than ``NEXUS_WS_MAX_MESSAGE_BYTES`` (1 MiB: chunks split, the final ``agent_message`` and the
``session_state`` carry what fits, flagged ``content_truncated``), and the chunks a client
assembles are exactly the stored reply."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.conftest import conversations_spec, scripted_agent, stored_replies
from tests.cluster.wsclient import Watcher, run_finished

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]

PIECE = "a long réply " * 80  # 1,040 characters, 1,120 bytes of UTF-8
REPEAT = 4_300  # 4.5 million characters: over daphne's 4 MiB frame limit
MAX_REPLY_CHARS = 1_000_000  # NEXUS_MAX_REPLY_CHARS's default
FRAME_LIMIT = 1_048_576  # NEXUS_WS_MAX_MESSAGE_BYTES's default


def _size(frame: dict[str, Any]) -> int:
    """The frame's size as sent (compact JSON, UTF-8), without the client's own bookkeeping."""
    sent = {k: v for k, v in frame.items() if k != "_received"}
    return len(json.dumps(sent, ensure_ascii=False, separators=(",", ":")).encode())


def _check_frames(watcher: Watcher) -> None:
    assert not watcher.seen("error"), watcher.seen("error")
    assert not watcher.violations, watcher.violations
    sizes = sorted(_size(f) for f in watcher.frames)
    assert sizes[-1] <= FRAME_LIMIT, sizes[-3:]


async def test_a_reply_longer_than_the_frame_limit_reaches_its_watchers(cluster):
    agent = scripted_agent("verbose", reply=PIECE, chunks=450, delay=0)
    agent["config"]["repeat"] = REPEAT
    [conversation] = cluster.fixtures(conversations_spec(1, agent))["conversations"]
    watcher = Watcher(conversation_id=conversation["id"], token=conversation["token"], name="reader")
    ws_base = cluster.ws_url(cluster.web_names[0])
    await watcher.connect(ws_base)
    try:
        await watcher.wait_frame("session_state")
        await watcher.send("user_message", content="say everything")
        await watcher.wait_for(
            lambda w: run_finished(w) or w.seen("error", code="internal"), timeout=60, what="the end"
        )
        _check_frames(watcher)
        finished = run_finished(watcher)
        assert finished["status"] == "incomplete"
        [(message_id, status, content)] = stored_replies(cluster, conversation["id"])
        assert (status, content) == ("incomplete", (PIECE * REPEAT)[:MAX_REPLY_CHARS])
        assert watcher.text[message_id] == content
        [info] = watcher.seen("info", code="reply_too_long")
        assert info["data"]["limit"] == MAX_REPLY_CHARS
        final = watcher.final[message_id]
        assert final["metadata"]["finish_reason"] == "length" and final["status"] == "incomplete"
        assert final["content_truncated"] is True and content.startswith(final["content"])
        # the socket still works
        pongs = len(watcher.seen("pong"))
        await watcher.send("ping")
        await watcher.wait_for(lambda w: len(w.seen("pong")) > pongs, timeout=10, what="pong")

        # A client that resumes from before the reply gets it whole too.
        late = Watcher(conversation_id=conversation["id"], token=conversation["token"], name="late")
        late.last_seq = 0
        await late.connect(cluster.ws_url(cluster.web_names[-1]))
        try:
            await late.wait_for(
                lambda w: run_finished(w) or w.seen("error", code="internal"), timeout=60, what="the end"
            )
            _check_frames(late)
            assert late.text[message_id] == content
            [state] = late.seen("session_state")
            [stored] = [m for m in state["data"]["messages"] if m["id"] == message_id]
            assert stored["content_truncated"] is True and content.startswith(stored["content"])
        finally:
            await late.close()
    finally:
        await watcher.close()
