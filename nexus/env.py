"""Tiny, strict readers of environment values.

Only ``nexus.settings`` calls these: it is the one module that reads ``os.environ``. Every
reader fails loudly (``ImproperlyConfigured`` naming the variable) on a value it cannot use,
so a typo in a deployment stops the process at start instead of misbehaving later.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "", environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(name, default).strip()


def env_bool(name: str, default: bool, environ: Mapping[str, str] = os.environ) -> bool:
    raw = environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} is above the maximum {maximum}")
    return value


def env_float(
    name: str, default: float, *, minimum: float = 0.0, environ: Mapping[str, str] = os.environ
) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}")
    return value


def env_list(name: str, default: list[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    raw = environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: set[str], environ: Mapping[str, str] = os.environ) -> str:
    value = env_str(name, default, environ).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of: {', '.join(sorted(choices))}")
    return value


def env_rate(name: str, default: str, environ: Mapping[str, str] = os.environ) -> str:
    """A DRF-style rate such as ``10/min``."""
    value = env_str(name, default, environ)
    count, _, period = value.partition("/")
    if not count.isdigit() or not period or period[0] not in "smhd":
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate like 10/min, 100/hour or 5/s")
    return value


def redis_url(name: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """A Redis URL, or None when unset. Validated here so a bad value fails at start."""
    raw = env_str(name, "", environ)
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(
            f"{name} must start with redis://, rediss:// or unix:// (got scheme {parts.scheme!r})"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ImproperlyConfigured(f"{name} has no host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port") from None
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ImproperlyConfigured(f"{name} database must be a number (got {db!r})")
    return raw


def provider_keys(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Every ``*_API_KEY`` variable: agents name the variable that holds their key."""
    return {name: value for name, value in environ.items() if name.endswith("_API_KEY") and value}


def mcp_credentials(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Every ``MCP_*`` variable: an MCP server's ``credential_env`` names one of these."""
    return {name: value for name, value in environ.items() if name.startswith("MCP_") and value}


def _origin_items(name: str, raw: str) -> list[str]:
    """A comma list (``a,b``) or a JSON list (``["a", "b"]``, the seed 003 form) of origins."""
    text = raw.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={raw!r} is not a JSON list of origins") from None
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ImproperlyConfigured(f"{name}={raw!r} must be a list of strings")
        return [item.strip() for item in items if item.strip()]
    return [item.strip() for item in text.split(",") if item.strip()]


def _origin(name: str, item: str) -> str:
    """One origin as browsers send it: ``scheme://host[:port]``, lower case, no path."""
    parts = urlsplit(item.rstrip("/"))
    if item == "*":
        raise ImproperlyConfigured(f"{name}: '*' is not accepted; list each origin the browser app runs at")
    if not parts.scheme or not parts.netloc or parts.path or parts.query or parts.fragment:
        raise ImproperlyConfigured(f"{name}: {item!r} is not an origin like https://app.example.com")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def env_origins(
    names: tuple[str, ...], default: list[str], environ: Mapping[str, str] = os.environ
) -> list[str]:
    """The allowed browser origins, from the first of ``names`` set (the others are aliases).

    Each variable takes a comma list or a JSON list. Two of them set to different lists is
    refused: which one wins would be a guess."""
    found: dict[str, list[str]] = {}
    for name in names:
        raw = environ.get(name)
        if raw is not None:
            found[name] = [_origin(name, item) for item in _origin_items(name, raw)]
    if not found:
        return list(default)
    lists = list(found.values())
    if any(sorted(other) != sorted(lists[0]) for other in lists[1:]):
        raise ImproperlyConfigured(
            f"{' and '.join(found)} are all set, to different origins: set one ({names[0]})"
        )
    return lists[0]
