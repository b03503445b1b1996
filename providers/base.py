"""The provider interface: typed stream events, one error type, and the ``ChatProvider`` protocol.

Everything a caller needs to talk to any model backend lives here. Adapters (one module each) turn
their provider's wire format into these events; the run engine consumes them without knowing which
provider produced them. Nothing here imports Django or reads the environment.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "blocked"]
ErrorKind = Literal[
    "rate_limited",
    "timeout",
    "unavailable",
    "auth",
    "bad_request",
    "protocol",
    "blocked",
    "incomplete",
    "egress_denied",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    """A tool the model may call; ``parameters`` is a JSON Schema object."""

    name: str
    description: str
    parameters: dict


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """A whole tool call: the adapter has assembled every delta and parsed the arguments.

    Also used inside ``ChatMessage.tool_calls`` to replay an assistant turn that called tools.
    """

    id: str
    name: str
    arguments: dict


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatMessage:
    """One turn of the conversation, in provider-neutral form."""

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()  # assistant turns that called tools
    tool_call_id: str | None = None  # role="tool": which call this answers
    name: str | None = None  # role="tool": the tool name (Gemini needs it)


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token counts as reported by the provider (zero when it reported nothing)."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta:
    """A piece of the assistant's reply text."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageReport:
    """Usage as soon as the provider reports it (``Finished`` repeats the final figure)."""

    usage: Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """The last event of every successful stream."""

    reason: FinishReason
    usage: Usage


StreamEvent = TextDelta | ToolCall | UsageReport | Finished


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Deadlines in seconds.

    ``connect``: opening the connection; ``first_token``: from sending the request to the first chunk
    of the reply; ``between_chunks``: the longest silence once the reply has started; ``total``: the
    whole call, retries and waits included.
    """

    connect: float = 5.0
    first_token: float = 60.0
    between_chunks: float = 30.0
    total: float = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationOptions:
    """Per-call settings. Secrets arrive here already resolved by the caller and are never stored."""

    temperature: float | None = None
    max_tokens: int | None = None
    base_url: str | None = None
    api_key: str | None = None
    api_version: str | None = None  # gemini
    extra: Mapping[str, Any] = field(default_factory=dict)  # provider-specific config
    timeouts: Timeouts = Timeouts()

    def __repr__(self) -> str:
        # Keep the key out of logs and tracebacks that print the options.
        key = "***" if self.api_key else None
        return (
            f"GenerationOptions(temperature={self.temperature!r}, max_tokens={self.max_tokens!r}, "
            f"base_url={self.base_url!r}, api_key={key!r}, api_version={self.api_version!r}, "
            f"extra={dict(self.extra)!r}, timeouts={self.timeouts!r})"
        )


class ProviderError(Exception):
    """The one error every adapter raises.

    ``kind`` says what went wrong in provider-neutral terms; ``message`` has no secrets and no
    tracebacks but may quote the upstream's answer (for logs and staff); ``public_message`` quotes
    nothing the upstream sent and names no address (for everyone else; ``message`` when the two are
    the same); ``retry_after`` is the provider's requested wait in seconds, when known; ``status``
    is the HTTP status, when there was one.
    """

    kind: ErrorKind

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        provider: str | None = None,
        public_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.public_message = public_message or message
        self.retry_after = retry_after
        self.status = status
        self.provider = provider

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kind={self.kind!r}, message={self.message!r}, "
            f"status={self.status!r}, retry_after={self.retry_after!r})"
        )


class IncompleteStream(ProviderError):
    """The stream ended (cleanly or not) before the provider sent a finish reason."""

    def __init__(self, message: str, *, provider: str | None = None, status: int | None = None) -> None:
        super().__init__("incomplete", message, provider=provider, status=status)


@dataclass(slots=True, kw_only=True)
class ProviderStatus:
    """What the REST API and admin show about a provider."""

    name: str
    reachable: bool
    models: list[str]
    detail: str = ""  # may quote the upstream (for staff and logs)
    public_detail: str | None = None  # quotes nothing from the upstream; None: ``detail`` is safe

    @property
    def safe_detail(self) -> str:
        return self.detail if self.public_detail is None else self.public_detail


@runtime_checkable
class ChatProvider(Protocol):
    """A model backend.

    ``stream_chat`` is an async generator: closing it (``aclose()``) stops the generation and closes
    the upstream connection.
    """

    name: str

    def stream_chat(
        self,
        *,
        model: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] = (),
        options: GenerationOptions,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Yield TextDelta/ToolCall/UsageReport, then exactly one Finished; raise ProviderError.

        A stream that ends without a finish raises IncompleteStream (the adapter never invents a finish).
        """
        ...

    async def status(self, *, options: GenerationOptions) -> ProviderStatus:
        """Whether the provider answers and which models it offers; never raises."""
        ...


_MAX_MESSAGE = 300
_KEYLIKE = re.compile(r"\b(sk|gsk|AIza|key)[-_A-Za-z0-9]{12,}")


def safe_message(text: object, *, secrets: Sequence[str | None] = ()) -> str:
    """A provider's error text made fit for users: secrets and key-like strings masked, length capped."""
    message = " ".join(str(text).split())
    for secret in secrets:
        if secret and len(secret) >= 4:
            message = message.replace(secret, "***")
    message = _KEYLIKE.sub("***", message)
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    return message
