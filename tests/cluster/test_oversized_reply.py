"""A reply longer than daphne's WebSocket message limit (``--websocket-max-message-size``, 4 MiB in
scripts/cluster.py, the Dockerfile and compose). Its ``agent_message`` frame carries the whole
text, and chunks merged while the path is busy can be as large: autobahn refuses to send such a
frame (PayloadExceededError), the socket's sender task fails (an ``internal`` error frame; the
close 1011 it then asks for does not happen either), and the socket stays open with nothing more
delivered on it. Every client that resumes from before that event meets the same end."""

from __future__ import annotations

import pytest

from tests.cluster.conftest import conversations_spec, scripted_agent, stored_replies
from tests.cluster.wsclient import Watcher, run_finished

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]

PIECE = "a long reply " * 80  # 1,040 characters
REPEAT = 4_300  # 4.5 MB: over daphne's 4 MiB frame limit


@pytest.mark.xfail(
    strict=True,
    reason="BUG: a reply over 4 MiB gives frames (agent_message, merged chunks) daphne cannot send; "
    "realtime/consumers.py ConversationSocket._pump/_forward fails on it (error internal) and the "
    "socket stays open delivering nothing, on every resume too (no cap on a reply's length, no "
    "split of large frames)",
)
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
            lambda w: run_finished(w) or w.seen("error", code="internal"), timeout=30, what="the end"
        )
        assert not watcher.seen("error", code="internal"), watcher.seen("error")
        finished = run_finished(watcher)
        assert finished["status"] == "completed"
        [(message_id, status, content)] = stored_replies(cluster, conversation["id"])
        assert (status, content) == ("complete", PIECE * REPEAT)
        assert watcher.text[message_id] == content
        # A client that resumes from before the reply gets it whole too.
        late = Watcher(conversation_id=conversation["id"], token=conversation["token"], name="late")
        late.last_seq = 0
        await late.connect(ws_base)
        try:
            await late.wait_for(
                lambda w: run_finished(w) or w.seen("error", code="internal"), timeout=30, what="the end"
            )
            assert not late.seen("error", code="internal"), late.seen("error")
        finally:
            await late.close()
    finally:
        await watcher.close()
