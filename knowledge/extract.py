"""Text out of a document's bytes (SPEC section 10): txt, md, html, pdf, docx.

The interface the pipeline uses: ``extract(data, filename=..., content_type=...) -> Extracted``,
raising ``ExtractionError`` with a message safe to show the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core import filetypes


class ExtractionError(ValueError):
    """The document could not be read; the message is safe to show its owner."""


@dataclass(frozen=True, slots=True)
class Extracted:
    """A document's text and what it says about itself.

    ``format`` is ``text``, ``markdown``, ``html``, ``pdf`` or ``docx`` (the chunker splits
    Markdown and HTML at headings); ``text`` of a Markdown or HTML source keeps its headings as
    Markdown ``#`` lines. ``metadata`` holds what the source declares: title, author, languages,
    date, creation_date.
    """

    text: str
    format: str
    metadata: dict[str, Any] = field(default_factory=dict)


def extract(data: bytes, *, filename: str = "", content_type: str | None = None) -> Extracted:
    """Read ``data``. ``content_type`` is a sniffed type (``core.filetypes``); sniffed if absent."""
    kind = content_type or filetypes.sniff(data, filename)
    if kind in (filetypes.TEXT, filetypes.MARKDOWN):
        text = data.decode("utf-8", errors="replace")
        fmt = "markdown" if kind == filetypes.MARKDOWN else "text"
        return Extracted(text=text, format=fmt, metadata={"title": filename})
    raise ExtractionError(f"cannot read {kind} yet")
