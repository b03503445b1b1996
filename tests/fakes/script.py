"""What a fake provider server answers: one ``Reply`` per request, in provider-neutral terms.

Each server renders a ``Reply`` in its own wire format (OpenAI SSE, Gemini SSE, Ollama NDJSON).
Faults count *frames*: the wire units the server writes (one SSE event or one NDJSON line).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeToolCall:
    """A tool call the fake model makes. OpenAI sends ``arguments`` as JSON text split over
    ``pieces`` frames; Gemini and Ollama send the call whole, as their wire formats do."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None  # None: the server makes one up (Ollama and Gemini send none)
    pieces: int = 3
    raw_arguments: str | None = None  # OpenAI only: send this text instead of the JSON of arguments


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """One scripted answer.

    Content: ``text`` split into ``chunks`` pieces (default: one per word), ``tool_calls``,
    ``finish_reason`` (neutral: stop, length, tool_calls, content_filter) and ``usage``
    (input, output tokens; None sends no usage).

    Pacing: ``tokens_per_s`` sleeps between content frames; ``first_chunk_delay`` before the first.

    Faults: ``status`` != 200 answers with that HTTP error (``retry_after`` sets ``Retry-After``);
    ``headers_delay`` waits before sending the status line; after k frames, ``stall_after`` goes
    silent (until the client leaves), ``cut_after`` ends the body cleanly with no finish,
    ``drop_after`` resets the TCP connection, ``malformed_after`` sends a frame that is not JSON,
    ``error_after`` sends the provider's in-stream error (code ``error_status``).

    ``openai_repeat_ids`` makes OpenAI tool-call deltas repeat id and name as llama.cpp's server does.
    ``extra`` holds dialect-specific switches: ``error_details`` (Gemini google.rpc details of an
    error), ``block_reason`` (Gemini: the prompt is blocked, no candidates), ``omit_finish`` (OpenAI:
    no finish_reason chunk, [DONE] still sent), ``omit_done`` (OpenAI: no [DONE]), ``retry_after_ms``
    (OpenAI: a ``retry-after-ms`` header).
    """

    text: str = "Hello from the fake server."
    chunks: int | None = None
    tool_calls: tuple[FakeToolCall, ...] = ()
    finish_reason: str | None = None  # None: tool_calls when there are calls, else stop
    usage: tuple[int, int] | None = (7, -1)  # -1: the number of text pieces
    tokens_per_s: float | None = None
    first_chunk_delay: float = 0.0
    status: int = 200
    retry_after: str | None = None
    error_message: str = "scripted failure"
    headers_delay: float = 0.0
    stall_after: int | None = None
    cut_after: int | None = None
    drop_after: int | None = None
    malformed_after: int | None = None
    error_after: int | None = None
    error_status: int = 500
    openai_repeat_ids: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def pieces(self) -> list[str]:
        """The text split as it goes on the wire."""
        if not self.text:
            return []
        if self.chunks is None:
            words = self.text.split(" ")
            return [w + " " for w in words[:-1]] + [words[-1]]
        n = max(1, min(self.chunks, len(self.text)))
        size, rest = divmod(len(self.text), n)
        out, start = [], 0
        for i in range(n):
            end = start + size + (1 if i < rest else 0)
            out.append(self.text[start:end])
            start = end
        return out

    def final_reason(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")

    def final_usage(self) -> tuple[int, int] | None:
        if self.usage is None:
            return None
        prompt, completion = self.usage
        return prompt, len(self.pieces()) if completion < 0 else completion

    @classmethod
    def words(cls, n: int, **kwargs: Any) -> Reply:
        """A reply of ``n`` one-word chunks (for benchmarks and long streams)."""
        return cls(text=" ".join(f"w{i}" for i in range(n)), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reply:
        data = dict(data)
        data["tool_calls"] = tuple(FakeToolCall(**tc) for tc in data.get("tool_calls", ()))
        if data.get("usage") is not None:
            data["usage"] = tuple(data["usage"])
        return cls(**data)
