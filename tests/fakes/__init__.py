"""Loopback fake provider servers that speak the real wire formats (see ../shared/WIRE.md).

In-process (a background thread with its own event loop; works from sync and async tests)::

    from tests.fakes import FakeOpenAI, FakeGemini, FakeOllama, Reply, FakeToolCall

    with FakeOpenAI() as server:              # binds a free port on 127.0.0.1
        server.base_url                       # "http://127.0.0.1:PORT/v1" (Gemini, Ollama: no /v1)
        server.script(Reply(text="Hi there", chunks=4), Reply(status=429, retry_after="1"))
        ...                                   # each streaming request takes the next reply;
        server.default_reply = Reply(...)     # when the queue is empty the default answers
        server.requests                       # [RecordedRequest]: method, path, query, headers,
                                              # json, frames_sent, finished_at, client_closed_at
        server.wait_for(lambda reqs: reqs and reqs[-1].client_closed, timeout=1)
        await server.wait_for_async(...)      # the same without blocking your event loop
        server.models = ["m1", "m2"]          # what /v1/models, /v1beta/models, /api/tags list

pytest fixtures ``fake_openai``, ``fake_gemini``, ``fake_ollama`` live in tests/providers/conftest.py.

As a subprocess (for daphne/worker tests and benchmarks)::

    python -m tests.fakes.openai_server --port 0 [--script replies.json]   # prints "READY <port>"

    with FakeServerProcess("ollama") as fake:   # same script()/requests/base_url, over HTTP:
        fake.script(Reply.words(2000))          # POST /_fake/replies {"replies": [...], "default": {...}}
        fake.requests                           # GET /_fake/requests ; POST /_fake/reset

``Reply`` (tests/fakes/script.py) describes an answer in neutral terms: text split into N chunks,
pacing (tokens/s), tool calls (OpenAI arguments split over several frames), usage, finish reason,
and faults: HTTP status + Retry-After, headers delay, stall / clean cut / TCP reset / malformed
frame / in-stream error after k frames. ``Reply.words(n)`` makes an n-chunk reply.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.gemini_server import FakeGemini
    from tests.fakes.ollama_server import FakeOllama
    from tests.fakes.openai_server import FakeOpenAI
    from tests.fakes.process import FakeServerProcess
    from tests.fakes.script import FakeToolCall, Reply
    from tests.fakes.server import FakeServer, RecordedRequest

# Imported on first use, so that `python -m tests.fakes.openai_server` does not import itself twice.
_WHERE = {
    "FakeGemini": "tests.fakes.gemini_server",
    "FakeOllama": "tests.fakes.ollama_server",
    "FakeOpenAI": "tests.fakes.openai_server",
    "FakeServer": "tests.fakes.server",
    "FakeServerProcess": "tests.fakes.process",
    "FakeToolCall": "tests.fakes.script",
    "RecordedRequest": "tests.fakes.server",
    "Reply": "tests.fakes.script",
}

__all__ = [
    "FakeGemini",
    "FakeOllama",
    "FakeOpenAI",
    "FakeServer",
    "FakeServerProcess",
    "FakeToolCall",
    "RecordedRequest",
    "Reply",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(name)
    return getattr(importlib.import_module(_WHERE[name]), name)
