"""The one retry and timeout layer every adapter streams through.

An adapter supplies a single *attempt*: an async generator that sends one request and yields
lists of events (all the events of one read from the wire, so the bookkeeping here costs once per
read, not once per token), calling ``watch.tick()`` for every chunk it reads. ``resilient_stream``
runs attempts under the policy below, so retries, backoff, ``Retry-After`` and deadlines behave the
same for every provider:

- at most ``max_attempts`` attempts, waiting 0.5 / 1 / 2 s plus jitter between them;
- a provider's ``Retry-After`` is honoured up to ``retry_after_cap``; above it we fail fast with a
  ``rate_limited`` error that carries ``retry_after``;
- only ``rate_limited``, ``unavailable`` and ``timeout`` failures (HTTP 408, 429, 5xx, connection
  failures) are retried; other 4xx are tried exactly once;
- never a retry once an event has been yielded: the caller has already seen part of a reply;
- first-token, between-chunk and total deadlines become ``ProviderError(kind="timeout")``; the
  connect deadline is enforced by the HTTP client (see ``httpx_timeout``);
- closing the stream closes the attempt, which closes the upstream HTTP response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

import httpx

from core.egress import EgressDenied
from providers.base import (
    Finished,
    IncompleteStream,
    ProviderError,
    StreamEvent,
    Timeouts,
    safe_message,
)

try:  # openai 3.x ships on httpx2; its errors look like httpx's but are other classes.
    import httpx2
except ImportError:  # pragma: no cover - httpx2 comes with openai
    httpx2 = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

RETRYABLE_KINDS = frozenset({"rate_limited", "unavailable", "timeout"})


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how long to retry. One instance per adapter, passed to its constructor."""

    max_attempts: int = 3
    backoff: tuple[float, ...] = (0.5, 1.0, 2.0)
    jitter: float = 0.25  # up to this fraction of the backoff is added at random
    retry_after_cap: float = 20.0  # a longer Retry-After fails fast instead of waiting

    def backoff_for(self, failed_attempts: int) -> float:
        """The wait after ``failed_attempts`` failures (1-based), jitter included."""
        base = self.backoff[min(failed_attempts, len(self.backoff)) - 1] if self.backoff else 0.0
        return base * (1.0 + random.random() * self.jitter)


def retry_policy(retry: RetryPolicy | None, retry_after_cap: float | None, **defaults: object) -> RetryPolicy:
    """The adapter's policy: ``retry`` (or the defaults), with ``retry_after_cap`` applied when given."""
    policy = retry or RetryPolicy(**defaults)  # type: ignore[arg-type]
    if retry_after_cap is not None:
        policy = dataclasses.replace(policy, retry_after_cap=float(retry_after_cap))
    return policy


class StreamWatch:
    """Deadline keeper for one attempt, handed to the adapter.

    The adapter calls ``tick()`` each time bytes (or a token) arrive; the first tick ends the
    first-token wait and every tick pushes the between-chunk deadline forward. Deadlines only run
    while we are waiting on the attempt, never while the consumer holds an event.

    One timer per attempt re-arms itself when it finds the deadline moved, so a tick costs a clock
    read instead of a timer reschedule (``asyncio.timeout`` per chunk cost ~10 us, a third of the
    per-token budget).
    """

    __slots__ = (
        "_between",
        "_cancelling",
        "_deadline",
        "_expired",
        "_handle",
        "_loop",
        "_total_deadline",
        "_waiter",
        "started",
    )

    def __init__(self, *, loop: asyncio.AbstractEventLoop, timeouts: Timeouts, total_deadline: float) -> None:
        self._loop = loop
        self._between = timeouts.between_chunks
        self._total_deadline = total_deadline
        self._deadline = min(loop.time() + timeouts.first_token, total_deadline)
        self._handle: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Task | None = None
        self._cancelling = 0
        self._expired = False
        self.started = False

    def tick(self) -> None:
        """Record that the provider sent something."""
        if self._waiter is None:
            self.started = True
            return  # the deadline is set afresh when the next wait starts
        self._deadline = min(self._loop.time() + self._between, self._total_deadline)
        if not self.started:
            self.started = True
            self._arm()  # the between-chunk deadline may come before the first-token one

    def _arm(self) -> None:
        handle = self._handle
        if handle is not None:
            if handle.when() <= self._deadline:
                return  # it fires early, sees the later deadline and re-arms
            handle.cancel()
        self._handle = self._loop.call_at(self._deadline, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self._waiter is None:
            return  # the consumer holds an event; the next wait arms again
        if self._loop.time() < self._deadline:
            self._handle = self._loop.call_at(self._deadline, self._fire)
            return
        self._expired = True
        self._waiter.cancel()

    def close(self) -> None:
        self._waiter = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def timeout_error(self, provider: str) -> ProviderError:
        if self._loop.time() >= self._total_deadline - 0.001:
            what = "the total time limit was reached"
        elif not self.started:
            what = "no reply before the first-token timeout"
        else:
            what = f"the reply stalled for more than {self._between:g} s"
        return ProviderError("timeout", f"{provider}: {what}", provider=provider)

    def waiting(self) -> None:
        """Before each wait on the attempt: set this wait's deadline (the timer follows lazily)."""
        if self.started:
            self._deadline = min(self._loop.time() + self._between, self._total_deadline)
        handle = self._handle
        if handle is None or handle.when() > self._deadline:
            self._arm()
        # The task is looked up each time: a stream may be iterated from more than one task.
        task = asyncio.current_task()
        assert task is not None
        self._cancelling = task.cancelling()
        self._waiter = task

    def idle(self) -> None:
        """After each wait: the consumer's time is not the provider's."""
        self._waiter = None

    def expired(self) -> bool:
        """Whether a CancelledError was ours: we expired and nobody else cancelled (as asyncio.timeout)."""
        task = self._waiter
        if self._expired and task is not None and task.uncancel() <= self._cancelling:
            self._expired = False
            return True
        return False


Attempt = Callable[[StreamWatch], AsyncGenerator[list[StreamEvent], None]]
ErrorMapper = Callable[[BaseException, StreamWatch], ProviderError | None]


def is_retryable(error: ProviderError) -> bool:
    """Whether a failed attempt (that yielded nothing) may be tried again."""
    if error.status is not None and 400 <= error.status < 500 and error.status not in (408, 429):
        return False
    return error.kind in RETRYABLE_KINDS


async def resilient_stream(
    attempt: Attempt,
    *,
    provider: str,
    timeouts: Timeouts,
    policy: RetryPolicy,
    map_error: ErrorMapper | None = None,
) -> AsyncGenerator[StreamEvent, None]:
    """Run ``attempt`` under the retry policy and deadlines; yield its events, then one Finished.

    ``map_error`` turns the adapter's SDK exceptions into ``ProviderError``; transport errors of
    httpx / httpx2 are mapped here so that the same failure gives the same kind everywhere.
    """
    loop = asyncio.get_running_loop()
    total_deadline = loop.time() + timeouts.total
    failures = 0
    while True:
        watch = StreamWatch(loop=loop, timeouts=timeouts, total_deadline=total_deadline)
        events = attempt(watch)
        yielded = False
        try:
            while True:
                # The hot loop: deadlines are armed around each wait on the attempt, inline.
                watch.waiting()
                try:
                    batch = await anext(events)
                except StopAsyncIteration:
                    break
                watch.idle()
                for event in batch:
                    yielded = True
                    yield event
                    if type(event) is Finished:
                        return
            # Adapters raise IncompleteStream themselves; this guards one that forgets.
            raise IncompleteStream(f"{provider}: the stream ended without a finish reason", provider=provider)
        except asyncio.CancelledError:
            if not watch.expired():
                raise  # a real cancellation: the run was stopped
            error = watch.timeout_error(provider)
        except ProviderError as exc:
            error = exc
        except Exception as exc:
            error = to_provider_error(exc, watch=watch, provider=provider, map_error=map_error)
        finally:
            # Runs on success, failure and aclose() alike: the upstream response is closed here.
            watch.close()
            await events.aclose()

        failures += 1
        if yielded or not is_retryable(error) or failures >= policy.max_attempts:
            raise error
        if error.retry_after is not None:
            if error.retry_after > policy.retry_after_cap:
                raise error  # fail fast: the caller may schedule a retry itself
            delay = error.retry_after + random.random() * 0.05
        else:
            delay = policy.backoff_for(failures)
        if loop.time() + delay >= total_deadline:
            raise error
        logger.info("%s: attempt %d failed (%s), retrying in %.2f s", provider, failures, error.kind, delay)
        await asyncio.sleep(delay)


def to_provider_error(
    exc: BaseException, *, watch: StreamWatch, provider: str, map_error: ErrorMapper | None = None
) -> ProviderError:
    """One ``ProviderError`` for any exception raised inside an attempt."""
    if isinstance(exc, ProviderError):
        return exc
    error = map_error(exc, watch) if map_error is not None else None
    if error is None:
        error = transport_error(exc, started=watch.started, provider=provider)
    if error is None:
        logger.exception("%s: unexpected error while streaming", provider, exc_info=exc)
        error = ProviderError(
            "protocol", f"{provider}: unexpected error from the provider", provider=provider
        )
    error.__cause__ = exc
    return error


def _classes(name: str) -> tuple[type[BaseException], ...]:
    found = [getattr(httpx, name)]
    if httpx2 is not None and hasattr(httpx2, name):
        found.append(getattr(httpx2, name))
    return tuple(found)


_CONNECT_TIMEOUT = _classes("ConnectTimeout") + _classes("PoolTimeout")
_TIMEOUT = _classes("TimeoutException")
_CONNECT = _classes("ConnectError")
_NETWORK = (*_classes("NetworkError"), *_classes("RemoteProtocolError"), ConnectionError)
_DECODING = _classes("DecodingError")


def transport_error(exc: BaseException, *, started: bool, provider: str) -> ProviderError | None:
    """Map an httpx/httpx2 transport exception (or None when ``exc`` is not one).

    A connection lost once the reply has started is ``incomplete`` (same as a clean close without a
    finish reason); lost before that it is ``unavailable`` and may be retried.
    """
    denied = _egress_denial(exc)
    if denied is not None:
        return ProviderError(
            "egress_denied",
            f"{provider}: {denied}",
            provider=provider,
            public_message=f"{provider}: {EgressDenied.public_message}",
        )
    if isinstance(exc, _CONNECT_TIMEOUT):
        return ProviderError("timeout", f"{provider}: could not connect in time", provider=provider)
    if isinstance(exc, _TIMEOUT):
        return ProviderError("timeout", f"{provider}: the provider did not answer in time", provider=provider)
    if isinstance(exc, _CONNECT):
        return ProviderError(
            "unavailable", f"{provider}: could not connect to the provider", provider=provider
        )
    if isinstance(exc, _NETWORK):
        if started:
            return IncompleteStream(f"{provider}: the connection dropped mid-stream", provider=provider)
        return ProviderError("unavailable", f"{provider}: the connection was closed", provider=provider)
    if isinstance(exc, _DECODING):
        return ProviderError("protocol", f"{provider}: the reply could not be decoded", provider=provider)
    return None


def _egress_denial(exc: BaseException | None) -> EgressDenied | None:
    """The egress refusal behind ``exc`` (SDKs wrap transport errors in their own), if any."""
    for _ in range(5):
        if exc is None or isinstance(exc, EgressDenied):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


_STATUS_WORDS = {
    "auth": "the provider refused the credentials",
    "timeout": "the provider timed out",
    "rate_limited": "the provider is rate limiting requests",
    "unavailable": "the provider is unavailable",
    "bad_request": "the provider refused the request",
}


def kind_for_status(status: int) -> str:
    """The error kind of an HTTP status (the same table for every provider)."""
    if status in (401, 403):
        return "auth"
    if status == 408:
        return "timeout"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "unavailable"
    return "bad_request"


def status_error(
    status: int, detail: str, *, provider: str, retry_after: float | None = None
) -> ProviderError:
    """A ``ProviderError`` for an HTTP error status; ``detail`` (the upstream's words) must have
    no secrets left, and goes in ``message`` only: ``public_message`` says what the status means."""
    kind = kind_for_status(status)
    text = f"{provider}: HTTP {status}"
    public = f"{text} ({_STATUS_WORDS[kind]})"
    if detail:
        text += f": {detail}"
    return ProviderError(
        kind,  # type: ignore[arg-type]
        text,
        status=status,
        retry_after=retry_after,
        provider=provider,
        public_message=public,
    )


def in_stream_error(
    detail: object, *, provider: str, status: int | None = None, kind: str | None = None
) -> ProviderError:
    """A ``ProviderError`` for an error the upstream reported inside a stream it had started: the
    upstream's words (secrets removed) in ``message`` only; ``kind`` from ``status`` when not given."""
    if kind is None:
        kind = kind_for_status(status) if status else "unavailable"
    return ProviderError(
        kind,  # type: ignore[arg-type]
        f"{provider}: {safe_message(detail or 'error in stream')}",
        status=status,
        provider=provider,
        public_message=f"{provider}: the provider reported an error during the reply",
    )


def parse_retry_after(headers: httpx.Headers | dict | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def httpx_timeout(timeouts: Timeouts) -> httpx.Timeout:
    """HTTP client timeouts: the connect deadline is the client's; reads are bounded by our watch.

    The read timeout is only a backstop (the watch fires first); it is as long as the longest wait
    we allow between two chunks.
    """
    read = max(timeouts.first_token, timeouts.between_chunks) + 1.0
    return httpx.Timeout(
        connect=timeouts.connect, read=read, write=timeouts.connect + read, pool=timeouts.connect
    )
