"""AG-UI 1.0 at ``POST /api/agui/{agent_id}`` (seed 003; docs/dialects.md, "AG-UI"), end to end:
a real daphne, the real ``openai`` provider pointed at the loopback fake OpenAI server, and two
clients: plain HTTP with every event checked against ``ag-ui-protocol``'s models, and the official
``@ag-ui/client`` ``HttpAgent`` in node (installed into a cache outside the checkout)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ag_ui.core import Event
from pydantic import TypeAdapter

from tests.browser.conftest import Nexus, serve_nexus
from tests.fakes.script import FakeToolCall, Reply

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

AGUI_CLIENT_VERSION = "1.0.0"
CLIENT_CACHE = Path(os.environ.get("NEXUS_AGUI_CLIENT_DIR", Path.home() / ".cache/nexus/agui-client"))
EVENT = TypeAdapter(Event)
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def nexus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nexus]:
    with serve_nexus(tmp_path_factory.mktemp("nexus-agui"), NEXUS_CLIENT_TOOL_TIMEOUT="60") as server:
        yield server


@pytest.fixture
def agent(nexus: Nexus) -> dict[str, Any]:
    nexus.fake.reset()
    return nexus.create_agent()


def _token(nexus: Nexus, username: str = "alice") -> str:
    with nexus.api(username) as client:
        return client.headers["Authorization"].removeprefix("Bearer ")


def _run_input(thread: str, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "threadId": thread,
        "runId": f"run-{uuid.uuid4().hex[:8]}",
        "protocolVersion": "1.0",
        "state": {},
        "messages": messages,
        "tools": [],
        "context": [],
        "forwardedProps": {},
        **extra,
    }


def _post_run(
    nexus: Nexus, agent_id: str, body: dict[str, Any], username: str = "alice"
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """POST one run and read its SSE body whole: every ``data:`` frame parsed, and checked to be
    LF-framed, JSON, free of nulls and a valid AG-UI event."""
    headers = {"Authorization": f"Bearer {_token(nexus, username)}", "Accept": "text/event-stream"}
    with httpx.stream(
        "POST", f"{nexus.url}/api/agui/{agent_id}", json=body, headers=headers, timeout=30
    ) as response:
        raw = response.read().decode()
    if response.status_code != 200:
        return response, []
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "\r" not in raw
    frames = []
    for block in raw.split("\n\n"):
        if not block or block.startswith(":"):
            continue
        assert block.startswith("data: ") and "\n" not in block, block
        frame = json.loads(block[len("data: ") :])
        assert "null" not in json.dumps(frame), frame  # optional fields absent, never null
        EVENT.validate_python(frame)  # ag-ui-protocol's own models
        frames.append(frame)
    return response, frames


def _chats(nexus: Nexus) -> list[Any]:
    """The chat completion requests the fake provider got (not the model listings)."""
    return [r for r in nexus.fake.requests if r.path.endswith("/chat/completions")]


def _types(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


def test_a_streamed_reply_is_valid_agui_events_and_the_next_run_sends_only_the_new_message(nexus, agent):
    nexus.fake.script(Reply(text="Mock reply in five pieces.", chunks=5), Reply(text="Second answer."))
    thread = f"thread-{uuid.uuid4().hex[:8]}"
    first = [{"id": "u1", "role": "user", "content": "Hello there"}]
    body = _run_input(thread, first)
    response, frames = _post_run(nexus, agent["id"], body)
    assert response.status_code == 200
    types = _types(frames)
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    assert frames[0]["threadId"] == thread and frames[0]["runId"] == body["runId"]
    assert frames[0]["protocolVersion"] == "1.0"
    assert frames[-1]["threadId"] == thread and frames[-1]["runId"] == body["runId"]
    # (the engine may join chunks that arrive together: one CONTENT or more)
    assert types[1] == "TEXT_MESSAGE_START" and types[-2] == "TEXT_MESSAGE_END"
    assert set(types[2:-2]) == {"TEXT_MESSAGE_CONTENT"}
    message_id = frames[1]["messageId"]
    assert frames[1]["role"] == "assistant"
    assert {f["messageId"] for f in frames[1:-1]} == {message_id}
    assert "".join(f["delta"] for f in frames if f["type"] == "TEXT_MESSAGE_CONTENT") == (
        "Mock reply in five pieces."
    )
    conversation = response.headers["X-Conversation-Id"]
    stored = nexus.conversation(conversation)["messages"]
    assert [m["content"] for m in stored if m["type"] == "message"] == [
        "Hello there",
        "Mock reply in five pieces.",
    ]

    # The client sends the whole thread each run: the stored turns are not stored or sent again.
    second = [
        *first,
        {"id": message_id, "role": "assistant", "content": "Mock reply in five pieces."},
        {"id": "u2", "role": "user", "content": "And again"},
    ]
    response, frames = _post_run(nexus, agent["id"], _run_input(thread, second))
    assert response.headers["X-Conversation-Id"] == conversation
    assert "".join(f["delta"] for f in frames if f["type"] == "TEXT_MESSAGE_CONTENT") == "Second answer."
    sent = _chats(nexus)[-1].json["messages"]
    assert [(m["role"], m["content"]) for m in sent if m["role"] != "system"] == [
        ("user", "Hello there"),
        ("assistant", "Mock reply in five pieces."),
        ("user", "And again"),
    ]
    # The same AG-UI message id again (a retried request) starts no new run: the first one's replays.
    response, frames = _post_run(nexus, agent["id"], _run_input(thread, second))
    assert "".join(f["delta"] for f in frames if f["type"] == "TEXT_MESSAGE_CONTENT") == "Second answer."
    assert len(_chats(nexus)) == 2


def test_a_server_tool_streams_its_call_and_result_and_the_reply_goes_on_in_a_new_text_message(nexus):
    nexus.fake.reset()
    spec = {
        "name": "current_time",
        "description": "The current date and time.",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}},
        "execution": "server",
    }
    agent = nexus.create_agent(tools=[spec])
    call = FakeToolCall(name="current_time", arguments={"timezone": "Europe/Paris"}, id="call_time_1")
    nexus.fake.script(Reply(text="Checking the clock.", tool_calls=(call,)), Reply(text="It is now."))
    response, frames = _post_run(
        nexus,
        agent["id"],
        _run_input(f"t-{uuid.uuid4().hex[:8]}", [{"id": "u1", "role": "user", "content": "Time?"}]),
    )
    assert response.status_code == 200
    types = [t for t in _types(frames) if t != "TEXT_MESSAGE_CONTENT"]
    assert types == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    first_text, second_text = (f["messageId"] for f in frames if f["type"] == "TEXT_MESSAGE_START")
    assert first_text != second_text
    start = next(f for f in frames if f["type"] == "TOOL_CALL_START")
    assert start == {
        "type": "TOOL_CALL_START",
        "toolCallId": "call_time_1",
        "toolCallName": "current_time",
        "parentMessageId": first_text,
    }
    args = "".join(f["delta"] for f in frames if f["type"] == "TOOL_CALL_ARGS")
    assert json.loads(args) == {"timezone": "Europe/Paris"}
    result = next(f for f in frames if f["type"] == "TOOL_CALL_RESULT")
    assert result["toolCallId"] == "call_time_1" and result["role"] == "tool"
    assert json.loads(result["content"])["timezone"] == "Europe/Paris"
    assert "pendingToolCallIds" not in json.dumps(frames[-1])


def test_a_thread_is_the_callers_own_conversation(nexus, agent):
    nexus.fake.script(default=Reply(text="ok"))
    other_agent = nexus.create_agent(username="operator")
    thread = f"thread-{uuid.uuid4().hex[:8]}"
    hello = [{"id": "u1", "role": "user", "content": "Hi"}]
    alice, _ = _post_run(nexus, agent["id"], _run_input(thread, hello))
    mine = alice.headers["X-Conversation-Id"]
    # The same thread id from someone else (here staff, who may see every conversation) is theirs.
    other, _ = _post_run(nexus, other_agent["id"], _run_input(thread, hello), username="operator")
    assert other.status_code == 200 and other.headers["X-Conversation-Id"] != mine
    other, _ = _post_run(nexus, other_agent["id"], _run_input(mine, hello), username="operator")
    assert other.status_code == 200 and other.headers["X-Conversation-Id"] != mine
    # A conversation's own id is a thread id for its owner (e.g. one opened in the web page).
    again, frames = _post_run(
        nexus, agent["id"], _run_input(mine, [{"id": "u9", "role": "user", "content": "More"}])
    )
    assert again.headers["X-Conversation-Id"] == mine and _types(frames)[-1] == "RUN_FINISHED"
    # Its conversation is with one agent: another agent on the thread is refused.
    wrong, _ = _post_run(nexus, nexus.create_agent()["id"], _run_input(thread, hello))
    assert wrong.status_code == 400 and "agent_id" in wrong.json()["errors"], wrong.text
    assert [m["content"] for m in nexus.conversation(mine)["messages"] if m["role"] == "user"] == [
        "Hi",
        "More",
    ]


def test_a_failing_provider_ends_the_run_with_run_error(nexus, agent):
    nexus.fake.script(Reply(status=401, error_message="bad key upstream"))
    response, frames = _post_run(
        nexus,
        agent["id"],
        _run_input(f"t-{uuid.uuid4().hex[:8]}", [{"id": "u1", "role": "user", "content": "Hi"}]),
    )
    assert response.status_code == 200
    assert _types(frames)[0] == "RUN_STARTED"
    assert _types(frames)[-1] == "RUN_ERROR"
    assert "RUN_FINISHED" not in _types(frames)
    assert frames[-1]["code"] == "provider_error", frames[-1]  # the native error frame's code
    assert frames[-1]["message"]


def test_state_and_context_reach_the_model_and_bad_input_is_a_clear_400(nexus, agent):
    nexus.fake.script(Reply(text="Noted."))
    body = _run_input(
        f"t-{uuid.uuid4().hex[:8]}",
        [{"id": "u1", "role": "user", "content": "Hi"}],
        state={"turns": 2},
        context=[{"description": "user timezone", "value": "Europe/Paris"}],
    )
    response, frames = _post_run(nexus, agent["id"], body)
    assert _types(frames)[-1] == "RUN_FINISHED"
    system = _chats(nexus)[-1].json["messages"][0]["content"]
    assert '"turns": 2' in system and "Europe/Paris" in system

    for bad, field in (
        ({"runId": "r", "messages": []}, "threadId"),
        (_run_input("t", []), "messages"),
        (_run_input("t", [{"id": "a", "role": "assistant", "content": "only me"}]), "messages"),
    ):
        response, _ = _post_run(nexus, agent["id"], bad)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "validation_error", response.text
        assert field in json.dumps(response.json()["errors"]), response.text
    bad_tool = {**WEATHER_TOOL, "name": "not a name!"}
    hi = [{"id": "u1", "role": "user", "content": "Hi"}]
    response, _ = _post_run(nexus, agent["id"], _run_input("t", hi, tools=[bad_tool]))
    assert response.status_code == 400 and response.json()["code"] == "validation_error", response.text
    headers = {"Authorization": f"Bearer {_token(nexus)}", "Content-Type": "application/json"}
    for raw in (b"{not json", b"[]", b"", "\u00e9".encode("latin-1")):
        response = httpx.post(f"{nexus.url}/api/agui/{agent['id']}", content=raw, headers=headers, timeout=10)
        assert response.status_code == 400 and response.json()["code"] == "validation_error", response.text
    response = httpx.post(f"{nexus.url}/api/agui/{uuid.uuid4()}", json=_run_input("t", hi), headers=headers)
    assert response.status_code == 404, response.text
    response = httpx.post(f"{nexus.url}/api/agui/{agent['id']}", json=_run_input("t", []), timeout=10)
    assert response.status_code == 401


def test_a_dropped_stream_does_not_stop_the_run(nexus, agent):
    nexus.fake.script(Reply(text=" ".join(f"w{i}" for i in range(40)), tokens_per_s=40))
    headers = {"Authorization": f"Bearer {_token(nexus)}"}
    body = _run_input(f"t-{uuid.uuid4().hex[:8]}", [{"id": "u1", "role": "user", "content": "Go"}])
    with httpx.stream(
        "POST", f"{nexus.url}/api/agui/{agent['id']}", json=body, headers=headers, timeout=30
    ) as r:
        conversation = r.headers["X-Conversation-Id"]
        for line in r.iter_lines():
            if "TEXT_MESSAGE_CONTENT" in line:
                break  # hang up mid-reply
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        replies = nexus.agent_messages(conversation)
        if replies and replies[-1]["status"] == "complete":
            break
        time.sleep(0.2)
    assert replies[-1]["content"] == " ".join(f"w{i}" for i in range(40))


def test_a_stopped_run_finishes_as_cancelled_and_an_unknown_tool_answer_is_a_404(nexus, agent):
    nexus.fake.script(Reply(text=" ".join(f"w{i}" for i in range(200)), tokens_per_s=20))
    headers = {"Authorization": f"Bearer {_token(nexus)}"}
    thread = f"t-{uuid.uuid4().hex[:8]}"
    body = _run_input(thread, [{"id": "u1", "role": "user", "content": "Go on and on"}])
    frames = []
    with httpx.stream(
        "POST", f"{nexus.url}/api/agui/{agent['id']}", json=body, headers=headers, timeout=30
    ) as r:
        conversation = r.headers["X-Conversation-Id"]
        stopped = False
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            frames.append(json.loads(line[len("data: ") :]))
            if frames[-1]["type"] == "TEXT_MESSAGE_CONTENT" and not stopped:
                stop = httpx.post(
                    f"{nexus.url}/api/conversations/{conversation}/stop/", headers=headers, timeout=10
                )
                assert stop.status_code == 200 and stop.json()["count"] == 1, stop.text
                stopped = True
    for frame in frames:
        EVENT.validate_python(frame)
    assert [f["type"] for f in frames[-2:]] == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    assert frames[-1]["outcome"] == {"type": "cancelled"}

    answer = _run_input(
        thread,
        [
            {"id": "u1", "role": "user", "content": "Go on and on"},
            {
                "id": "a1",
                "role": "assistant",
                "toolCalls": [
                    {"id": "call_nope", "type": "function", "function": {"name": "x", "arguments": "{}"}}
                ],
            },
            {"id": "t1", "role": "tool", "toolCallId": "call_nope", "content": "42"},
        ],
    )
    response, _ = _post_run(nexus, agent["id"], answer)
    assert response.status_code == 404 and response.json()["code"] == "not_found", response.text


def test_a_frontend_tool_answer_sent_twice_is_taken_once_and_streams_the_rest_again(nexus, agent):
    call = FakeToolCall(name="get_weather", arguments={"city": "Oslo"}, id="call_oslo")
    nexus.fake.script(Reply(text="", tool_calls=(call,)), Reply(text="Cold in Oslo."))
    thread = f"t-{uuid.uuid4().hex[:8]}"
    user = {"id": "u1", "role": "user", "content": "Weather in Oslo?"}
    _, frames = _post_run(nexus, agent["id"], _run_input(thread, [user], tools=[WEATHER_TOOL]))
    assert _types(frames) == [
        "RUN_STARTED",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "RUN_FINISHED",
    ]
    assert frames[-1]["outcome"]["pendingToolCallIds"] == ["call_oslo"]
    parent = frames[1]["parentMessageId"]
    answered = [
        user,
        {
            "id": parent,
            "role": "assistant",
            "toolCalls": [
                {
                    "id": "call_oslo",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"id": "t1", "role": "tool", "toolCallId": "call_oslo", "content": '{"temp": -3}'},
    ]
    for _attempt in range(2):
        response, frames = _post_run(nexus, agent["id"], _run_input(thread, answered, tools=[WEATHER_TOOL]))
        assert response.status_code == 200, response.text
        assert _types(frames)[-1] == "RUN_FINISHED", frames
        assert "".join(f["delta"] for f in frames if f["type"] == "TEXT_MESSAGE_CONTENT") == "Cold in Oslo."
        assert "TOOL_CALL_RESULT" not in _types(frames)  # the client's own answer is not echoed
    assert len(_chats(nexus)) == 2
    (tool_message,) = [m for m in _chats(nexus)[-1].json["messages"] if m["role"] == "tool"]
    assert json.loads(tool_message["content"]) == {"result": {"temp": -3}, "is_error": False}


# --- the official client --------------------------------------------------------------------------

CLIENT_SCRIPT = r"""
import { HttpAgent } from "@ag-ui/client";
const [url, token, mode] = process.argv.slice(2);
const agent = new HttpAgent({ url, headers: { Authorization: `Bearer ${token}` } });
const out = { runs: [] };
const tools = [WEATHER];
async function run(params) {
  const events = [];
  let failed = null;
  try {
    const result = await agent.runAgent(params, {
      onEvent({ event }) { events.push(event); },
      onRunFailed({ error }) { failed = String(error); },
    });
    out.runs.push({ events, newMessages: result.newMessages, failed });
  } catch (err) {
    out.runs.push({ events, error: String(err), failed });
  }
}
agent.addMessage({ id: "u1", role: "user", content: mode === "tool" ? "Weather in Paris?" : "Hello" });
await run(mode === "tool" ? { tools } : {});
if (mode === "tool") {
  const call = agent.messages.flatMap((m) => m.toolCalls || [])[0];
  out.call = call;
  agent.addMessage({ id: "tool-" + call.id, role: "tool", toolCallId: call.id, content: "Sunny in Paris" });
  await run({ tools });
}
out.threadId = agent.threadId;
out.messages = agent.messages;
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def agui_client() -> Path:
    """The pinned ``@ag-ui/client``, installed once into a cache outside the checkout."""
    package = CLIENT_CACHE / "node_modules" / "@ag-ui" / "client" / "package.json"
    if not (package.exists() and json.loads(package.read_text())["version"] == AGUI_CLIENT_VERSION):
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: the official AG-UI client cannot be installed")
        CLIENT_CACHE.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [npm, "install", "--prefix", str(CLIENT_CACHE), f"@ag-ui/client@{AGUI_CLIENT_VERSION}"],
            capture_output=True,
            text=True,
            timeout=240,
        )
        if result.returncode != 0:
            pytest.skip(
                f"npm could not install @ag-ui/client (registry unreachable?): {result.stderr[-500:]}"
            )
    script = CLIENT_CACHE / f"nexus-agui-test-{os.getpid()}.mjs"  # beside node_modules, to resolve it
    script.write_text(CLIENT_SCRIPT.replace("WEATHER", json.dumps(WEATHER_TOOL)))
    yield script
    script.unlink(missing_ok=True)


def _node(script: Path, url: str, token: str, mode: str) -> dict[str, Any]:
    result = subprocess.run(
        ["node", str(script), url, token, mode], capture_output=True, text=True, timeout=90, cwd=script.parent
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_official_client_runs_a_streamed_reply(nexus, agent, agui_client):
    nexus.fake.script(Reply(text="Hello from Nexus over AG-UI.", chunks=4))
    out = _node(agui_client, f"{nexus.url}/api/agui/{agent['id']}", _token(nexus), "text")
    (run,) = out["runs"]
    assert "error" not in run and run["failed"] is None, run
    types = [e["type"] for e in run["events"]]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    for event in run["events"]:
        EVENT.validate_python(event)
    assert [m["role"] for m in out["messages"]] == ["user", "assistant"]
    assert out["messages"][1]["content"] == "Hello from Nexus over AG-UI."


def test_the_official_client_runs_a_frontend_tool_round(nexus, agent, agui_client):
    call = FakeToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_weather_1")
    nexus.fake.script(
        Reply(text="Let me check.", tool_calls=(call,)), Reply(text="It is sunny in Paris.", chunks=3)
    )
    out = _node(agui_client, f"{nexus.url}/api/agui/{agent['id']}", _token(nexus), "tool")
    first, second = out["runs"]
    assert "error" not in first and "error" not in second, out
    types = [e["type"] for e in first["events"]]
    assert types[-4:] == ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "RUN_FINISHED"]
    assert "TOOL_CALL_RESULT" not in types
    assert first["events"][-1]["outcome"] == {"type": "success", "pendingToolCallIds": ["call_weather_1"]}
    assert out["call"]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    texts = [e["delta"] for e in second["events"] if e["type"] == "TEXT_MESSAGE_CONTENT"]
    assert "".join(texts) == "It is sunny in Paris."
    assert [e["type"] for e in second["events"]][-1] == "RUN_FINISHED"
    # The model got the client's answer to its call, once.
    tool_messages = [m for m in _chats(nexus)[-1].json["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_weather_1"]
    assert "Sunny in Paris" in tool_messages[0]["content"]
    # The frontend tool was offered to the model with its schema, as a function.
    offered = _chats(nexus)[0].json["tools"]
    assert [t["function"]["name"] for t in offered] == ["get_weather"]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "tool", "assistant"]
