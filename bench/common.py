"""Shared pieces of the relay benchmark: a stamping fake OpenAI server, Nexus clusters to measure,
a bare echo consumer for the memory baseline, and small statistics helpers.

The stamping fake is the loopback fake of ``tests/fakes`` (OpenAI's real wire format, read by the
real SDK) with one addition: a reply scripted with ``extra={"stamp": True}`` writes each token as
``<index>@<time.monotonic()> `` taken just before the frame is written, so a client anywhere on this
machine (CLOCK_MONOTONIC is system-wide on Linux) knows each token's send time.

Run alone: ``python -m bench.common --port 0`` (prints ``READY <port>``).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from tests.fakes.openai_server import CREATED, FakeOpenAI  # noqa: E402
from tests.fakes.process import FakeServerProcess  # noqa: E402
from tests.fakes.script import Reply  # noqa: E402
from tests.fakes.server import Plan, RecordedRequest, main  # noqa: E402

STAMP = re.compile(r"(\d+)@(\d+\.\d+) ")


def stamped_reply(tokens: int, tokens_per_s: float | None) -> Reply:
    """A reply of ``tokens`` stamped tokens, paced at ``tokens_per_s`` (None: as fast as it can)."""
    return Reply(text="", tokens_per_s=tokens_per_s, extra={"stamp": True, "tokens": tokens})


def stamps(text: str) -> list[tuple[int, float]]:
    """(token index, send time) of every stamped token in ``text``."""
    return [(int(i), float(t)) for i, t in STAMP.findall(text)]


class StampedOpenAI(FakeOpenAI):
    """FakeOpenAI whose stamped replies carry each token's send time."""

    def stream_plan(self, reply: Reply, body: dict) -> Plan:
        if not reply.extra.get("stamp"):
            return super().stream_plan(reply, body)
        plan = super().stream_plan(Reply(text=""), body)
        plan.frames = []  # written by _stream below
        plan.reply = reply
        return plan

    async def _stream(self, conn: Any, request: RecordedRequest, plan: Plan) -> bool:
        reply = plan.reply
        if reply is None or not reply.extra.get("stamp"):
            return await super()._stream(conn, request, plan)
        body = request.json or {}
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": body.get("model", "fake-model"),
        }
        writer = conn.writer

        async def send(delta: dict, finish: str | None = None, **extra: Any) -> None:
            data = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            frame = b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            await writer.drain()

        tokens = int(reply.extra["tokens"])
        interval = 1.0 / reply.tokens_per_s if reply.tokens_per_s else 0.0
        try:
            await send({"role": "assistant", "content": ""})
            started = time.monotonic()
            for index in range(tokens):
                if conn.closed.is_set():
                    return False
                if interval:
                    # an absolute schedule: sleep overshoot does not accumulate
                    delay = started + index * interval - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await send({"content": f"{index}@{time.monotonic():.6f} "})
                request.frames_sent += 1
            await send({}, "stop")
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": 7, "completion_tokens": tokens, "total_tokens": tokens + 7}
                frame = b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n"
                writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            frame = b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(frame), frame))
            await writer.drain()
        except (ConnectionError, OSError):
            return False
        request.finished_at = time.monotonic()
        return True


class StampedFakeProcess(FakeServerProcess):
    """The stamping fake in its own process (it must not share the measuring client's GIL)."""

    def __init__(self) -> None:
        super().__init__("openai")
        self._args = [sys.executable, "-m", "bench.common", "--port", "0"]

    @property
    def pid(self) -> int:
        assert self._popen is not None
        return self._popen.pid


def throwaway_postgres(server_url: str) -> tuple[str, Any]:
    """(URL of a new empty database on the PostgreSQL server at ``server_url``, a function that
    drops it)."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(server_url)
    name = f"nexus_bench_{uuid.uuid4().hex[:12]}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunsplit(parts._replace(path=f"/{name}")), drop


# --- the memory baseline: a bare daphne echo consumer ----------------------------------------------


class _EchoApplication:
    """``daphne bench.common:echo_application``: accept, echo text frames, nothing else."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._app is None:
            import django

            django.setup()
            from channels.generic.websocket import AsyncWebsocketConsumer
            from channels.routing import ProtocolTypeRouter

            class Echo(AsyncWebsocketConsumer):
                channel_layer_alias = None

                async def receive(
                    self, text_data: str | None = None, bytes_data: bytes | None = None
                ) -> None:
                    await self.send(text_data=text_data)

            async def http(scope: dict, receive: Any, send: Any) -> None:
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"ok"})

            self._app = ProtocolTypeRouter({"websocket": Echo.as_asgi(), "http": http})
        await self._app(scope, receive, send)


echo_application = _EchoApplication()


# --- statistics ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


if __name__ == "__main__":
    main(StampedOpenAI)
