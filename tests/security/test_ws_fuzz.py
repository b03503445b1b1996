"""Hypothesis fuzz of the WebSocket wire (SPEC section 4): structure-aware frames of every client
type, with the right fields, wrong field types, nested junk, huge numbers, unicode, fields at the
top level or under ``data``, unknown types and text that is not JSON at all.

Two layers:
- ``parse_client_frame`` directly, many examples: it returns a well-formed frame or raises
  ``ProtocolError`` with a code of the enum, nothing else;
- the real ASGI application (one socket kept across examples, reopened when the server closes it
  for a defined reason): every frame gets the answer the parser predicts, any ``error`` frame has
  a code of the enum and is never ``internal``, the socket never closes with 1011, nothing is
  logged as an exception, and a ``ping`` right after gets its ``pong``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime import protocol
from tests.realtime.conftest import make_agent, make_conversation

# -- strategies ------------------------------------------------------------------------------------

NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\t\n",
        "\x00",
        "💥",
        "\u202eevil",
        "null",
        "undefined",
        "NaN",
        "../../etc/passwd",
        "<script>alert(1)</script>",
        "' OR 1=1 --",
        "%s%s%n",
        "\ud7ff\ue000\uffff",
        "a" * 129,
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        str(uuid.UUID(int=1)),
    ]
)
TEXT = st.one_of(st.text(max_size=40), NASTY_TEXT)
HUGE_INTS = st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), 10**30])
NUMBERS = st.one_of(
    st.integers(min_value=-(2**66), max_value=2**66),
    HUGE_INTS,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 0.5, 1e308, -1e-308, 1.0]),
)
LEAF = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(
    LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
)
SEQ = st.one_of(st.integers(min_value=-3, max_value=50), HUGE_INTS, JSON)
CONTENT = st.one_of(st.text(min_size=1, max_size=60), NASTY_TEXT, JSON)

# The fields each client type reads (every spelling the parser accepts), with values that are
# sometimes right and sometimes not. ``{own}``/``{agent}`` are replaced by the ids of the
# conversation and agent under test, so some frames are well-formed and act.
OWN, AGENT = "{own}", "{agent}"
IDS = st.one_of(st.just(OWN), st.just(AGENT), st.uuids().map(str), TEXT, JSON)
FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "initialize": {
        "conversation_id": st.one_of(st.just(OWN), IDS),
        "sessionId": st.one_of(st.just(OWN), IDS),
        "session_id": IDS,
        "conversationId": IDS,
        "agent_id": IDS,
        "agentId": IDS,
        "context": st.one_of(st.dictionaries(TEXT, JSON, max_size=3), JSON),
        "last_seq": SEQ,
        "lastSeq": SEQ,
    },
    "user_message": {
        "content": CONTENT,
        "context": st.one_of(st.dictionaries(TEXT, JSON, max_size=3), JSON),
        "agent_id": IDS,
        "agentId": IDS,
        "client_message_id": st.one_of(TEXT, JSON),
        "clientMessageId": st.one_of(TEXT, JSON),
    },
    "text": {"content": CONTENT, "timestamp": st.one_of(TEXT, NUMBERS)},
    "query": {"query": CONTENT, "content": CONTENT, "agent_id": IDS},
    "stop": {"run_id": IDS, "runId": IDS},
    "tool_result": {
        "toolCallId": IDS,
        "tool_call_id": IDS,
        "result": JSON,
        "is_error": st.one_of(st.booleans(), JSON),
        "isError": st.one_of(st.booleans(), JSON),
    },
    "feedback": {
        "messageId": IDS,
        "message_id": IDS,
        "rating": st.one_of(st.sampled_from(["positive", "negative", None]), JSON),
        "comment": st.one_of(TEXT, JSON, st.just("c" * 4001)),
    },
    "resume": {"last_seq": SEQ, "lastSeq": SEQ},
    "ping": {},
    "pong": {},
}
KNOWN_TYPES = sorted(FIELDS)


@st.composite
def frame_objects(draw: st.DrawFn) -> Any:
    """A frame as a JSON value: usually an object with a type and fields, placed at the top level
    or under ``data`` (or both); sometimes something else entirely."""
    shape = draw(st.sampled_from(["known"] * 8 + ["unknown", "no type", "not an object"]))
    if shape == "not an object":
        return draw(st.one_of(st.lists(JSON, max_size=3), LEAF))
    kind: Any
    if shape == "known":
        kind = draw(st.sampled_from(KNOWN_TYPES))
    elif shape == "unknown":
        kind = draw(
            st.one_of(TEXT, st.sampled_from(["INITIALIZE", "user_message ", "agent_message", "error"]))
        )
    else:
        kind = draw(st.one_of(st.just(None), NUMBERS, st.lists(TEXT, max_size=2)))
    known = FIELDS.get(kind, {}) if isinstance(kind, str) else {}
    names = draw(st.lists(st.sampled_from(sorted(known)), unique=True, max_size=len(known))) if known else []
    fields = {name: draw(known[name]) for name in names}
    fields.update(draw(st.dictionaries(TEXT, JSON, max_size=2)))  # junk next to the real fields
    frame: dict[str, Any] = {} if shape == "no type" and draw(st.booleans()) else {"type": kind}
    placement = draw(st.sampled_from(["data", "data", "top", "split", "junk data"]))
    if placement == "data":
        frame["data"] = fields
    elif placement == "top":
        frame.update({k: v for k, v in fields.items() if k != "type"})
    elif placement == "split":
        items = list(fields.items())
        cut = draw(st.integers(0, len(items)))
        frame.update({k: v for k, v in items[:cut] if k != "type"})
        frame["data"] = dict(items[cut:])
    else:
        frame.update({k: v for k, v in fields.items() if k not in ("type", "data")})
        frame["data"] = draw(st.one_of(LEAF, st.lists(JSON, max_size=2)))
    return frame


def _substitute(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, dict):
        return {k: _substitute(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, ids) for v in value]
    return value


@st.composite
def raw_frames(draw: st.DrawFn, ids: dict[str, str] | None = None) -> str | bytes:
    """What a client could put in one WebSocket message."""
    how = draw(st.sampled_from(["json"] * 12 + ["ascii json", "truncated", "text", "bytes", "nan"]))
    if how == "text":
        return draw(st.one_of(st.text(max_size=80), NASTY_TEXT))
    if how == "bytes":
        return draw(st.binary(max_size=40))
    value = _substitute(draw(frame_objects()), ids or {})
    if how == "nan":  # Python's json writes NaN/Infinity, which JSON does not have
        if isinstance(value, dict):
            value["last_seq"] = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        return json.dumps(value)
    raw = json.dumps(value, ensure_ascii=how == "ascii json")
    if how == "truncated":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    return raw


# -- the parser, directly ---------------------------------------------------------------------------

PARSED_TYPES = (
    protocol.Initialize,
    protocol.UserMessage,
    protocol.Stop,
    protocol.ToolResult,
    protocol.Feedback,
    protocol.Resume,
    protocol.Ping,
    protocol.Pong,
)


def _check_parsed(frame: Any) -> None:
    """What a parsed frame promises the consumer."""
    assert isinstance(frame, PARSED_TYPES), frame

    def short_id(value: Any) -> bool:
        return value is None or (isinstance(value, str) and len(value) <= protocol.MAX_ID_CHARS)

    match frame:
        case protocol.UserMessage():
            assert isinstance(frame.content, str) and frame.content.strip()
            assert "\x00" not in frame.content  # its length is the run service's quota (runs/quotas.py)
            assert short_id(frame.agent_id) and short_id(frame.client_message_id)
            assert frame.context is None or isinstance(frame.context, dict)
        case protocol.Initialize():
            assert short_id(frame.conversation_id) and short_id(frame.agent_id)
            assert frame.context is None or isinstance(frame.context, dict)
            assert frame.last_seq is None or (type(frame.last_seq) is int and frame.last_seq >= 0)
        case protocol.Resume():
            assert type(frame.last_seq) is int and frame.last_seq >= 0
        case protocol.Stop():
            assert short_id(frame.run_id)
        case protocol.ToolResult():
            assert (
                isinstance(frame.tool_call_id, str) and 0 < len(frame.tool_call_id) <= protocol.MAX_ID_CHARS
            )
            assert isinstance(frame.is_error, bool)
        case protocol.Feedback():
            assert isinstance(frame.message_id, str) and frame.message_id
            assert frame.rating in ("positive", "negative", None)
            assert isinstance(frame.comment, str) and len(frame.comment) <= 4000


def parse_outcome(raw: str | bytes) -> tuple[str, Any]:
    """("error", code) or ("frame", the parsed frame); anything else the parser raises fails."""
    try:
        frame = protocol.parse_client_frame(raw)
    except protocol.ProtocolError as exc:
        assert exc.code in protocol.ERROR_CODES
        assert isinstance(exc.message, str) and exc.message
        json.dumps(exc.details)  # details go into a JSON frame as they are
        return "error", exc.code
    _check_parsed(frame)
    return "frame", frame


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=raw_frames())
def test_the_parser_answers_every_frame_with_a_frame_or_a_coded_error(raw):
    parse_outcome(raw)


@settings(max_examples=500, deadline=None)
@given(kind=st.sampled_from(KNOWN_TYPES), data=st.data())
def test_fields_at_the_top_level_parse_as_under_data(kind, data):
    """Seed 001 clients put fields at the top level: the same fields mean the same frame there."""
    known = FIELDS[kind]
    names = data.draw(st.lists(st.sampled_from(sorted(known)), unique=True)) if known else []
    fields = {name: data.draw(known[name]) for name in names}
    nested = parse_outcome(json.dumps({"type": kind, "data": fields}))
    top = parse_outcome(json.dumps({"type": kind, **fields}))
    assert nested == top


# -- the real application ---------------------------------------------------------------------------


class Session:
    """One socket of the fuzzed conversation, opened again whenever the server closed it."""

    def __init__(self, connect: Any, user: Any, conversation_id: str) -> None:
        self.connect, self.user, self.conversation_id = connect, user, conversation_id
        self.client: Any = None
        self.frames = 0
        self.reopened = 0
        self.history: list[Any] = []
        self.answers: Counter[str] = Counter()  # what the frames got: "ack", "error:not_found"...

    async def socket(self) -> Any:
        if self.client is None:
            self.client = await self.connect(f"/ws/conversations/{self.conversation_id}/", user=self.user)
            await self.client.until("session_state")
        return self.client

    async def exchange(self, raw: str | bytes) -> tuple[list[dict[str, Any]], int | None]:
        """Send ``raw`` then a ping; the frames up to the pong that answers the ping (None), or
        up to the server's close (its code)."""
        client = await self.socket()
        self.frames += 1
        self.history.append(raw)
        # send_input, not send_to: an empty message is a message too
        key = "bytes" if isinstance(raw, bytes) else "text"
        await client.ws.send_input({"type": "websocket.receive", key: raw})
        await client.send({"type": "ping"})
        pongs = 2 if parse_outcome(raw) == ("frame", protocol.Ping()) else 1
        seen: list[dict[str, Any]] = []
        while pongs:
            try:
                output = await client.ws.receive_output(timeout=15)
            except TimeoutError:
                raise AssertionError(
                    f"no answer within 15 s to {raw!r}; got {seen}; before: {self.history[-6:-1]}"
                ) from None
            if output["type"] == "websocket.close":
                await client.ws.disconnect()  # what daphne does: the consumer's disconnect() runs
                self.client = None
                self.reopened += 1
                return seen, output.get("code", 1000)
            frame = json.loads(output["text"])
            seen.append(frame)
            kind = frame["type"]
            self.answers[f"{kind}:{frame['data'].get('code')}" if kind in ("error", "info") else kind] += 1
            if frame["type"] == "pong" and "seq" not in frame:
                pongs -= 1
        return seen, None


def _check_server_frame(frame: dict[str, Any]) -> None:
    assert isinstance(frame.get("type"), str), frame
    assert isinstance(frame.get("data"), dict), frame
    assert isinstance(frame.get("timestamp"), str), frame
    if "seq" in frame:
        assert type(frame["seq"]) is int and frame["seq"] > 0, frame
    if frame["type"] == "error" and "seq" not in frame:
        code = frame["data"].get("code")
        assert code in protocol.ERROR_CODES, frame
        assert code != "internal", f"the server failed on a frame: {frame}"


@pytest.fixture
def fuzzed(user, settings):
    settings.NEXUS_WS_MESSAGES_PER_MINUTE = 1_000_000  # the fuzz, not the rate limit, is under test
    agent = make_agent(owner=user, reply="fuzzed reply", chunks=2)
    conversation = make_conversation(user, agent, settings={"double_text": "reject"})
    return {"{own}": str(conversation.pk), "{agent}": str(agent.pk)}


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
@pytest.mark.usefixtures("scripted_provider")
async def test_every_fuzzed_frame_gets_a_defined_answer_and_the_socket_stays_usable(
    connect, user, fuzzed, caplog
):
    caplog.set_level(logging.WARNING)
    session = Session(connect, user, fuzzed[OWN])

    @settings(
        max_examples=2000,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(raw=raw_frames(fuzzed))
    async def one_frame(raw: str | bytes) -> None:
        outcome, parsed = parse_outcome(raw)
        seen, closed = await session.exchange(raw)
        for frame in seen:
            _check_server_frame(frame)
        answers = [f for f in seen if "seq" not in f and f["type"] not in ("pong", "ping")]
        errors = [f["data"]["code"] for f in answers if f["type"] == "error"]
        if closed is not None:
            # The one defined close for a well-formed frame: initialize naming a conversation that
            # is not this user's (4001, after a not_found error frame).
            assert outcome == "frame" and isinstance(parsed, protocol.Initialize), (raw, closed, seen)
            assert parsed.conversation_id not in (None, fuzzed[OWN]), (raw, closed, seen)
            assert (closed, errors) == (4001, ["not_found"]), (raw, closed, seen)
            return
        if outcome == "error":
            assert errors == [parsed], (raw, seen)
            assert [f["type"] for f in answers] == ["error"], (raw, seen)
        else:
            assert len(errors) <= 1, (raw, seen)

    # Hypothesis drives the examples from a thread; each one runs on this test's loop, where the
    # socket lives, so one connection serves every example.
    loop = asyncio.get_running_loop()
    inner = one_frame.hypothesis.inner_test

    def run_example(*args: Any, **kwargs: Any) -> None:
        asyncio.run_coroutine_threadsafe(inner(*args, **kwargs), loop).result(timeout=60)

    one_frame.hypothesis.inner_test = run_example
    await asyncio.to_thread(one_frame)
    assert session.frames >= 2000, session.frames

    client = await session.socket()
    await client.send({"type": "ping"})
    await client.until("pong")
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not logged, [f"{r.name}: {r.getMessage()}" for r in logged][:5]
    # The fuzz reached the handlers, not only the parser: frames acted, and were refused for
    # what they named as well as for their shape.
    for answer in ("ack", "run_started", "session_state", "error:validation_error", "error:not_found"):
        assert session.answers[answer] >= 5, session.answers
    print(f"{session.frames} frames, reopened {session.reopened} times after 4001: {dict(session.answers)}")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("scripted_provider")
async def test_a_context_with_a_huge_number_does_not_poison_the_conversation(connect, user):
    """Found by the fuzz on PostgreSQL: jsonb stores 1e300 as a number and gives it back as an int
    of 301 digits, which orjson cannot write, so every ``session_state`` of that conversation
    failed: an ``internal`` error on initialize, and 1011 on every later connect. (SQLite keeps the
    text as written, so this passes there on the old code too.)"""
    client = await connect("/ws/agent/", user=user)
    agent = await sync_to_async(make_agent)(owner=user)
    await client.send({"type": "initialize", "data": {"agent_id": str(agent.pk), "context": {"n": 1e300}}})
    state = await client.until("session_state")
    conversation_id = state["data"]["conversation"]["id"]
    await client.send({"type": "initialize", "data": {"conversation_id": conversation_id}})
    state = await client.until("session_state")
    again = await connect(f"/ws/conversations/{conversation_id}/", user=user)
    assert (await again.until("session_state"))["data"]["conversation"]["id"] == conversation_id
    assert not [f for f in client.frames + again.frames if f["type"] == "error"]
