"""A reply longer than daphne's WebSocket message limit (``--websocket-max-message-size``, 4 MiB in
scripts/cluster.py, the Dockerfile and compose). Its chunks go out, but its ``agent_message`` frame
carries the whole text: autobahn refuses to send it (PayloadExceededError), the socket's sender
task fails and closes it 1011, and every reconnect that resumes before that event replays it and
dies the same way: the conversation cannot be watched any more."""

from __future__ import annotations

import pytest

from tests.cluster.conftest import conversations_spec, scripted_agent, stored_replies
from tests.cluster.wsclient import Watcher, run_finished

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]

PIECE = "a long reply " * 80  # 1,040 characters
REPEAT = 4_300  # 4.5 MB: over daphne's 4 MiB frame limit


@pytest.mark.xfail(
    strict=True,
    reason="BUG: a reply over 4 MiB gives an agent_message frame daphne cannot send; "
    "realtime/consumers.py ConversationSocket._pump closes the socket 1011 on it, and again on every "
    "resume (no cap on a reply's length, no split of the final frame)",
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
        finished = await watcher.wait_for(run_finished, timeout=20, what="run_finished")
        assert finished["status"] == "completed"
        [(message_id, status, content)] = stored_replies(cluster, conversation["id"])
        assert (status, content) == ("complete", PIECE * REPEAT)
        assert watcher.text[message_id] == content
        # A client that resumes from before the reply gets it whole too.
        late = Watcher(conversation_id=conversation["id"], token=conversation["token"], name="late")
        late.last_seq = 0
        await late.connect(ws_base)
        try:
            await late.wait_for(run_finished, timeout=20, what="the replayed run_finished")
        finally:
            await late.close()
    finally:
        await watcher.close()
