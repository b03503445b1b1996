"""A run that waits for approval outlives its socket and its web process (SPEC section 11): a
worker asks the (fake OpenAI) model, which calls a tool that needs approval; the run pauses,
stored; the socket drops and the daphne it was on is SIGKILLed and started again; a new socket
there sees the pending approval in its ``session_state``, approves, and a worker resumes the run
from the database and finishes it with the tool's result."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from tests.cluster.conftest import close_all, runs_of, service_of_owner, stored_replies
from tests.cluster.wsclient import Watcher, run_finished
from tests.fakes import FakeServerProcess, Reply
from tests.fakes.script import FakeToolCall

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

CURRENT_TIME = {
    "name": "current_time",
    "description": "The current date and time in a time zone.",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}},
    "execution": "server",
    "approval": "always",
}
ANSWER = "It is evening in Paris."


def _waiting(cluster, conversation_id: str) -> dict:
    deadline = time.monotonic() + 15
    while True:
        [run] = runs_of(cluster, conversation_id)
        if run["status"] == "waiting":
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.1)


async def test_an_approval_survives_the_socket_and_the_web_process_and_a_worker_finishes_the_run(cluster):
    with FakeServerProcess("openai") as fake:
        fake.script(
            Reply(
                text="",
                tool_calls=(
                    FakeToolCall(name="current_time", arguments={"timezone": "Europe/Paris"}, id="call_tz"),
                ),
            ),
            Reply(text=ANSWER),
        )
        owner = f"approver-{uuid.uuid4().hex[:8]}"
        made = cluster.fixtures(
            {
                "users": [{"username": owner}],
                "agents": [
                    {
                        "name": "careful",
                        "provider": "openai",
                        "model": "gpt-4o-mini",
                        "base_url": fake.base_url,
                        "tools": [CURRENT_TIME],
                    }
                ],
                "conversations": [{"owner": owner, "agents": ["careful"]}],
            }
        )
        [conversation] = made["conversations"]
        first = Watcher(conversation_id=conversation["id"], token=conversation["token"], name="first")
        again = Watcher(conversation_id=conversation["id"], token=conversation["token"], name="again")
        try:
            await first.connect(cluster.ws_url("web1"))
            await first.wait_frame("session_state")
            await first.send("user_message", content="What time is it in Paris?")
            asked = (await first.wait_frame("approval_required", timeout=20))["data"]
            assert (asked["toolCallId"], asked["tool"]) == ("call_tz", "current_time")
            assert asked["parameters"] == {"timezone": "Europe/Paris"}

            # Paused and stored: no process owns it, nothing heartbeats it.
            run = _waiting(cluster, conversation["id"])
            assert run["owner"] == ""
            first.drop()
            cluster.kill("web1")
            await asyncio.sleep(0.5)
            assert _waiting(cluster, conversation["id"])["id"] == run["id"]
            cluster.start_service("web1")

            await again.connect(cluster.ws_url("web1"))
            state = (await again.wait_frame("session_state"))["data"]
            assert [(p["toolCallId"], p["run_id"]) for p in state["pending_approvals"]] == [
                ("call_tz", run["id"])
            ]
            assert [r["status"] for r in state["active_runs"]] == ["waiting"]
            await again.send("approve", toolCallId="call_tz")
            ack = await again.wait_frame("ack", toolCallId="call_tz")
            assert ack["data"]["decision"] == "approved"
            finished = await again.wait_for(run_finished, timeout=30, what="run_finished")
        finally:
            await close_all([first, again])

        assert finished["status"] == "completed"
        [decided] = again.seen("approval_decided")
        assert decided["data"]["decision"] == "approved"
        [result] = again.seen("tool_result", toolCallId="call_tz")
        assert result["data"]["is_error"] is False and result["data"]["result"]["timezone"] == "Europe/Paris"

        # One run, asked once before the pause and once after it, by a worker, from the database.
        [run] = runs_of(cluster, conversation["id"])
        assert run["status"] == "completed"
        assert service_of_owner(cluster, run["owner"]) in cluster.worker_names
        [(message_id, status, content)] = stored_replies(cluster, conversation["id"])
        assert (status, content) == ("complete", ANSWER)
        assert again.final[message_id]["content"] == ANSWER
        chats = [r for r in fake.requests if r.path == "/v1/chat/completions"]
        assert len(chats) == 2
        resumed = chats[1].json["messages"]
        assert [m["role"] for m in resumed[-2:]] == ["assistant", "tool"]
        assert resumed[-2]["tool_calls"][0]["id"] == "call_tz"
        tool_message = resumed[-1]
        assert tool_message["tool_call_id"] == "call_tz"
        assert json.loads(tool_message["content"])["result"]["timezone"] == "Europe/Paris"
        pending = cluster.sql(
            "select status, decided_by_id from runs_pendingtoolcall where run_id = %s", (run["id"],)
        )
        assert pending == [("approved", made["users"][owner]["id"])]
