"""Plain text from a message's Markdown: the sidebar's preview and the automatic title.

No renderer is involved: a few patterns take away what a reader would not see as text (fences,
emphasis marks, heading and list markers, link targets), which is enough for a one-line summary.
"""

from __future__ import annotations

import re

PREVIEW_CHARS = 100
TITLE_CHARS = 60

_FENCE = re.compile(r"^\s*(```|~~~)[^\n]*$", re.MULTILINE)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>\n]*>")
_LINE_MARKER = re.compile(
    r"^\s{0,3}(?:#{1,6}\s+|>\s?|[-*+]\s+\[[ xX]\]\s+|[-*+]\s+|\d{1,9}[.)]\s+)", re.MULTILINE
)
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1")
_CODE = re.compile(r"`+([^`]*)`+")
_SPACE = re.compile(r"\s+")
_FENCED_BLOCK = re.compile(r"^\s*(```|~~~).*?(^\s*\1\s*$|\Z)", re.MULTILINE | re.DOTALL)
# A sentence ends at . ! ? (or their CJK forms) followed by a space.
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")
# A first sentence shorter than this ("Hi!", "e.g.") takes the next one along.
_TITLE_MIN_CHARS = 16


def markdown_to_plain(text: str) -> str:
    """The text a reader sees in ``text`` (Markdown), on one line."""
    text = _FENCE.sub("", text or "")
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _AUTOLINK.sub(r"\1", text)
    text = _HTML_TAG.sub("", text)
    text = _RULE.sub("", text)
    text = _LINE_MARKER.sub("", text)
    text = _CODE.sub(r"\1", text)
    for _ in range(2):  # nested: **_both_**
        text = _EMPHASIS.sub(r"\2", text)
    return _SPACE.sub(" ", text).strip()


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at a word boundary when one is near, with …"""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-–—") + "…"


def preview(text: str) -> str:
    """The first ``PREVIEW_CHARS`` characters of a message as plain text."""
    return shorten(markdown_to_plain(text), PREVIEW_CHARS)


def title_from_message(text: str) -> str:
    """A title from a person's first message: its first sentence (or line) as plain text, at most
    ``TITLE_CHARS`` characters, without a final full stop, starting with a capital. "" when the
    message has no text at all (only a code block, say)."""
    body = _FENCED_BLOCK.sub("\n", text or "")  # code is not a title
    line = next((plain for plain in map(markdown_to_plain, body.splitlines()) if plain), "")
    sentence = ""
    for part in _SENTENCE_END.split(line):
        sentence = f"{sentence} {part}".strip()
        if len(sentence) >= _TITLE_MIN_CHARS:
            break
    sentence = sentence.rstrip(" .,;:")
    if not sentence:
        return ""
    title = shorten(sentence, TITLE_CHARS)
    return title[:1].upper() + title[1:]
