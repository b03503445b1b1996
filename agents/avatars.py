"""An agent's avatar: one emoji on a colour of its own. Both are fields of the agent; an agent
that has no colour gets one derived from its id, so agents look different from the start."""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid

from django.core.exceptions import ValidationError

# Mid-tone colours that an emoji reads well on, in light and dark themes alike.
PALETTE = (
    "#e8590c",
    "#f59f00",
    "#66a80f",
    "#2f9e44",
    "#0c8599",
    "#1c7ed6",
    "#4263eb",
    "#7048e8",
    "#ae3ec9",
    "#d6336c",
    "#c2255c",
    "#5c940d",
)
COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")

_ZWJ = 0x200D
_KEYCAP = 0x20E3
_EXTENDERS = {0xFE0E, 0xFE0F, _KEYCAP}  # variation selectors, keycap


def default_colour(agent_id: uuid.UUID | str) -> str:
    """The palette colour of an agent id (stable: the same id always gets the same colour)."""
    digest = hashlib.sha256(str(agent_id).encode()).digest()
    return PALETTE[digest[0] % len(PALETTE)]


def _is_extender(cp: int) -> bool:
    return cp in _EXTENDERS or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F


def is_one_emoji(text: str) -> bool:
    """Whether ``text`` is exactly one emoji grapheme: a symbol with its modifiers (skin tones,
    variation selectors, tags), a ZWJ sequence (👩‍💻), a flag (two regional indicators) or a keycap."""
    if not text or len(text) > 16:
        return False
    clusters = 0
    previous: int | None = None
    regional_run = 0
    for ch in text:
        cp = ord(ch)
        if _is_extender(cp) or cp == _ZWJ:
            if previous is None:
                return False
        elif 0x1F1E6 <= cp <= 0x1F1FF:  # regional indicators pair up into one flag
            if previous is not None and previous != _ZWJ and regional_run % 2 == 1:
                regional_run += 1
                previous = cp
                continue
            regional_run = 1
            if previous != _ZWJ:
                clusters += 1
        elif previous == _ZWJ:
            if unicodedata.category(ch) != "So":
                return False
        elif unicodedata.category(ch) == "So" or (ch in "#*0123456789" and _KEYCAP in map(ord, text)):
            clusters += 1
            regional_run = 0
        else:
            return False
        previous = cp
    return clusters == 1 and previous != _ZWJ


def validate_emoji(value: str) -> None:
    """Empty, or one emoji."""
    if value and not is_one_emoji(value):
        raise ValidationError("One emoji, e.g. 🦉 (or empty).", code="invalid_emoji")


def validate_colour(value: str) -> None:
    """Empty (derived from the id), or a colour written #rrggbb."""
    if value and not COLOUR.match(value):
        raise ValidationError("A colour written #rrggbb, e.g. #1c7ed6 (or empty).", code="invalid_colour")
