"""A document's text cut into passages (SPEC section 10).

Interface: ``chunk_text(text, fmt=..., strategy=..., size=..., overlap=...) -> list[Piece]``.

- ``tokens``: windows of at most ``size`` tokens, each starting ``overlap`` tokens before the end
  of the one before. A window ends at a paragraph end when there is one in its last 40 %, else
  at a sentence end there, else where the tokens run out: passages rarely stop mid-sentence.
- ``headings``: Markdown sections (HTML and Word documents arrive with their headings as
  Markdown ``#`` lines, see ``knowledge.extract``), each passage titled with its heading path
  (``Manual > Troubleshooting``) and starting with its heading line; a section longer than
  ``size`` is cut as above. A text without headings is cut by tokens.

Every piece carries the heading it sits under as ``title`` (empty before the first heading).

A *token* is a token of the bundled embedding model's tokenizer (the Llama 2 SentencePiece
vocabulary that ships with WordLlama), counted word by word: about 1.3 tokens an English word.
Without it (not installed), a token is a run of letters/digits or one punctuation mark, which
counts within ~15 % of it on English prose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, overload

STRATEGIES = ("tokens", "headings")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"[.!?;:)\]\"'»”]$")
_APPROX_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_BOUNDARY_ZONE = 0.4  # look for a paragraph or sentence end in the last 40 % of a window


@dataclass(frozen=True, slots=True)
class Piece:
    """One passage: its text, its order in the document, and the heading it sits under."""

    text: str
    position: int
    title: str = ""


@lru_cache(maxsize=1)
def _tokenizer() -> object | None:
    try:
        from knowledge.embeddings import wordllama_tokenizer

        return wordllama_tokenizer()
    except Exception:  # the package is missing: the approximation counts instead
        return None


def count_tokens(words: list[str]) -> list[int]:
    """Tokens of each word (see the module doc for what a token is)."""
    tokenizer = _tokenizer()
    if tokenizer is None or not words:
        return [max(1, len(_APPROX_TOKEN.findall(word))) for word in words]
    unique = list(dict.fromkeys(words))  # prose repeats its words: each is counted once
    encodings = tokenizer.encode_batch(unique, add_special_tokens=False)  # type: ignore[attr-defined]
    known = {word: max(1, len(encoding.ids)) for word, encoding in zip(unique, encodings, strict=True)}
    return [known[word] for word in words]


def _words(text: str) -> tuple[list[str], set[int]]:
    """The words of ``text`` and the indexes of the words that end a paragraph."""
    words: list[str] = []
    paragraph_ends: set[int] = set()
    for paragraph in re.split(r"\n\s*\n", text):
        found = paragraph.split()
        if found:
            words.extend(found)
            paragraph_ends.add(len(words) - 1)
    return words, paragraph_ends


def _join(words: list[str], paragraph_ends: set[int], start: int, end: int) -> str:
    parts: list[str] = []
    for index in range(start, end):
        parts.append(words[index])
        if index < end - 1:
            parts.append("\n\n" if index in paragraph_ends else " ")
    return "".join(parts)


@overload
def _windows(text: str, size: int, overlap: int) -> list[str]: ...
@overload
def _windows(text: str, size: int, overlap: int, *, starts: Literal[True]) -> list[tuple[int, str]]: ...


def _windows(text: str, size: int, overlap: int, *, starts: bool = False) -> list[Any]:
    """``text`` cut into windows of at most ``size`` tokens overlapping by about ``overlap``
    (with ``starts``: each with the index of its first word)."""
    words, paragraph_ends = _words(text)
    if not words:
        return []
    counts = count_tokens(words)
    out: list[Any] = []
    start = 0
    while start < len(words):
        total = 0
        end = start
        while end < len(words) and (total + counts[end] <= size or end == start):
            total += counts[end]
            end += 1
        if end < len(words):
            end = _best_cut(words, paragraph_ends, counts, start, end, size)
        window = _join(words, paragraph_ends, start, end)
        out.append((start, window) if starts else window)
        if end >= len(words):
            break
        # The next window starts `overlap` tokens back, never before this one's start.
        back, carried = end, 0
        while back > start + 1 and carried + counts[back - 1] <= overlap:
            back -= 1
            carried += counts[back]
        start = back
    return out


def _best_cut(
    words: list[str], paragraph_ends: set[int], counts: list[int], start: int, end: int, size: int
) -> int:
    """Where to end the window ``words[start:end]``: after a paragraph end, else a sentence end,
    in its last part; else ``end``."""
    zone_tokens = 0
    sentence_cut = None
    index = end - 1
    while index > start and zone_tokens <= size * _BOUNDARY_ZONE:
        if index in paragraph_ends:
            return index + 1
        if sentence_cut is None and _SENTENCE_END.search(words[index]):
            sentence_cut = index + 1
        zone_tokens += counts[index]
        index -= 1
    return sentence_cut or end


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading path, section text with its heading line) for each Markdown section."""
    sections: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    title = ""
    in_fence = False

    def close() -> None:
        body = "\n".join(lines).strip()
        only_heading = len([line for line in lines if line.strip()]) == 1 and _HEADING.match(body) is not None
        if body and not (only_heading and title):  # a bare heading lives on in its children's titles
            sections.append((title, body))

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match is None:
            lines.append(line)
            continue
        close()
        level, heading = len(match.group(1)), match.group(2).strip()
        path = [(lv, name) for lv, name in path if lv < level] + [(level, heading)]
        title = " > ".join(name for _, name in path)
        lines = [line]
    close()
    return sections


def chunk_text(
    text: str, *, fmt: str = "text", strategy: str = "tokens", size: int = 256, overlap: int = 32
) -> list[Piece]:
    """Cut ``text`` into passages of at most ``size`` tokens (see the module doc)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown chunking strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
    if size < 8:
        raise ValueError("size must be at least 8 tokens")
    overlap = max(0, min(overlap, size // 2))
    pieces: list[Piece] = []
    sections = _sections(text)
    if strategy == "headings" and any(title for title, _ in sections):
        for title, body in sections:
            for window in _windows(body, size, overlap):
                pieces.append(Piece(text=window, position=len(pieces), title=title))
        return pieces
    # tokens: windows over the whole text, each titled with the heading its first word is under
    titles = _word_titles(text)
    for start, window in _windows(text, size, overlap, starts=True):
        pieces.append(Piece(text=window, position=len(pieces), title=titles[start] if titles else ""))
    return pieces


def _word_titles(text: str) -> list[str]:
    """The heading path each word of ``text`` (in ``text.split()`` order) sits under."""
    titles: list[str] = []
    path: list[tuple[int, str]] = []
    title = ""
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match is not None:
            level = len(match.group(1))
            path = [(lv, name) for lv, name in path if lv < level] + [(level, match.group(2).strip())]
            title = " > ".join(name for _, name in path)
        titles.extend([title] * len(line.split()))
    return titles
