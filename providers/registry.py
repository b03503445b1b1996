"""Provider names -> adapters, imported lazily by dotted path (like healthchecks' transports).

A new provider is one module plus one line in ``BUILTIN``. The Django side passes settings with
``registry.configure(name, **settings)``; tests register scripted providers through ``register``
(or ``override`` for one block), the same door the built-ins use.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from providers.base import ChatProvider, ProviderError

BUILTIN: Mapping[str, str] = {
    "local": "providers.local.LocalProvider",
    "ollama": "providers.ollama.OllamaProvider",
    "openai": "providers.openai_compat.OpenAIProvider",
    "gemini": "providers.gemini.GeminiProvider",
}

ALL = "*"  # configure(ALL, ...) gives settings to every provider whose factory accepts them

Factory = Callable[..., ChatProvider]
Entry = ChatProvider | Factory | str


def _import(path: str) -> Factory:
    module_name, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def _accepted(factory: Factory, settings: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``settings`` that ``factory`` takes as keyword arguments."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(settings)
    names = {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in settings.items() if k in names}


def _is_provider(value: object) -> bool:
    # An instance, not a class: classes have stream_chat too, as a plain function.
    return (
        not isinstance(value, type)
        and callable(getattr(value, "stream_chat", None))
        and hasattr(value, "status")
    )


class ProviderRegistry:
    """Maps names to providers. An entry is an instance, a factory (class or callable taking the
    configured keyword settings) or a dotted path to a factory; instances are made once and reused."""

    def __init__(self, entries: Mapping[str, Entry] = BUILTIN) -> None:
        self._entries: dict[str, Entry] = dict(entries)
        self._settings: dict[str, dict[str, Any]] = {}
        self._instances: dict[str, ChatProvider] = {}
        self._lock = threading.RLock()

    def register(self, name: str, provider: Entry) -> None:
        """Add or replace ``name``: a provider instance, a factory, or a dotted path to a factory."""
        with self._lock:
            self._entries[name] = provider
            self._instances.pop(name, None)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)
            self._instances.pop(name, None)

    def configure(self, name: str, **settings: Any) -> None:
        """Keyword settings for the factory of ``name`` (e.g. ``base_url``, ``model_path``).

        ``name="*"`` sets defaults for every provider, each factory getting only the keys it accepts
        (e.g. ``retry_after_cap``); a provider's own settings win. Replaces earlier settings for
        ``name`` and drops instances already made, so the next ``get`` builds afresh. Providers
        registered as ready instances are left as they are.
        """
        with self._lock:
            if name != ALL and name not in self._entries:
                raise ProviderError("bad_request", f"unknown provider {name!r}")
            self._settings[name] = dict(settings)
            if name == ALL:
                self._instances.clear()
            else:
                self._instances.pop(name, None)

    def get(self, name: str) -> ChatProvider:
        """The provider registered as ``name``; ``ProviderError(kind="bad_request")`` if there is none."""
        provider = self._instances.get(name)
        if provider is not None:
            return provider
        with self._lock:
            provider = self._instances.get(name)
            if provider is not None:
                return provider
            entry = self._entries.get(name)
            if entry is None:
                raise ProviderError("bad_request", f"unknown provider {name!r}")
            if _is_provider(entry):
                provider = entry  # type: ignore[assignment]
            else:
                factory = _import(entry) if isinstance(entry, str) else entry
                settings = _accepted(factory, self._settings.get(ALL, {}))  # type: ignore[arg-type]
                settings.update(self._settings.get(name, {}))
                provider = factory(**settings)  # type: ignore[operator]
            self._instances[name] = provider  # type: ignore[assignment]
            return provider  # type: ignore[return-value]

    def configured_egress(self) -> Any:
        """The egress policy given to every provider (``configure("*", egress=...)``), or None.
        Other users of the providers' HTTP (embeddings) send under the same policy."""
        with self._lock:
            return self._settings.get(ALL, {}).get("egress")

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    @contextlib.contextmanager
    def override(self, name: str, provider: Entry) -> Iterator[None]:
        """Register ``provider`` as ``name`` for the duration of a block (tests), then restore."""
        with self._lock:
            previous = self._entries.get(name)
            instance = self._instances.get(name)
        self.register(name, provider)
        try:
            yield
        finally:
            with self._lock:
                if previous is None:
                    self._entries.pop(name, None)
                else:
                    self._entries[name] = previous
                self._instances.pop(name, None)
                if instance is not None:
                    self._instances[name] = instance


registry = ProviderRegistry()


def get_provider(name: str) -> ChatProvider:
    """The provider named ``name`` from the default registry."""
    return registry.get(name)
