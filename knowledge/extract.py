"""Text out of a document's bytes (SPEC section 10): txt, md, html, pdf, docx.

The interface the pipeline uses: ``extract(data, filename=..., content_type=...) -> Extracted``,
raising ``ExtractionError`` with a message safe to show the user (never a traceback: whatever
a reader library raises on a broken file becomes one).

- text and Markdown: UTF-8 (a byte-order mark dropped; undecodable bytes replaced).
- HTML: the standard library's parser; scripts, styles, templates and SVG dropped; headings kept
  as Markdown ``#`` lines, list items as ``-`` lines, table rows as ``a | b``; metadata from
  ``<title>``, ``<html lang>`` and ``<meta name=author|date|description>``.
- PDF: ``pypdf``, page by page; an encrypted file opens only when its password is empty; a PDF
  with no text layer (a scan) is refused, as nothing could be searched in it.
- Word (docx): ``python-docx``; paragraphs styled ``Title``/``Heading N`` become ``#`` lines,
  tables ``a | b`` rows; core properties give title, author, created, modified and language.

``metadata``: ``title`` (the document's own, else the file name), ``author``, ``date`` (last
modified, ISO 8601), ``creation_date``, ``languages`` (a guess from common words, e.g.
``["en"]``, left out when unsure), each only when known.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from io import BytesIO
from typing import Any

from core import filetypes

logger = logging.getLogger(__name__)


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
    if content_type is None:
        try:
            content_type = filetypes.sniff(data, filename)
        except filetypes.UnsupportedType as exc:
            raise ExtractionError(f"unsupported file type: {exc}") from None
    reader = _READERS.get(content_type)
    if reader is None:
        raise ExtractionError(f"cannot extract text from {content_type}")
    try:
        text, fmt, metadata = reader(data)
    except ExtractionError:
        raise
    except Exception as exc:  # a reader library's own error on a broken file
        logger.info("extraction of %r (%s) failed: %r", filename, content_type, exc)
        raise ExtractionError(
            f"the {_KIND_NAMES.get(content_type, 'file')} could not be read (damaged?)"
        ) from None
    text = _tidy(text)
    if not metadata.get("title") and filename:
        metadata["title"] = filename
    languages = guess_languages(text)
    if languages and not metadata.get("languages"):
        metadata["languages"] = languages
    return Extracted(text=text, format=fmt, metadata={k: v for k, v in metadata.items() if v})


_KIND_NAMES = {
    filetypes.PDF: "PDF",
    filetypes.DOCX: "Word document",
    filetypes.HTML: "HTML page",
    filetypes.MARKDOWN: "Markdown file",
    filetypes.TEXT: "text file",
}


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\f\v]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _decode(data: bytes) -> str:
    return data.decode("utf-8-sig", errors="replace")


# --- text and Markdown ------------------------------------------------------------------------------


def _read_text(data: bytes) -> tuple[str, str, dict[str, Any]]:
    return _decode(data), "text", {}


def _read_markdown(data: bytes) -> tuple[str, str, dict[str, Any]]:
    text = _decode(data)
    metadata: dict[str, Any] = {}
    match = re.search(r"^#[ \t]+(.+?)[ \t#]*$", text, re.MULTILINE)
    if match:
        metadata["title"] = match.group(1).strip()
    return text, "markdown", metadata


# --- HTML --------------------------------------------------------------------------------------------

_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object"})
_BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "blockquote",
        "pre", "ul", "ol", "table", "form", "figure", "figcaption", "dl", "dt", "dd", "hr", "address",
    }
)  # fmt: skip
_VOID = frozenset(
    {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "wbr"}
)


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip_depth = 0
        self.in_title = False
        self.title = ""
        self.heading: int | None = None
        self.cells: list[str] | None = None
        self.metadata: dict[str, Any] = {}
        self.in_head = False  # until </head> or <body>: a page may leave </head> out

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "html" and values.get("lang"):
            self.metadata["languages"] = [values["lang"].split("-")[0].lower()]
        if tag == "meta":
            name = (values.get("name") or values.get("property") or "").lower()
            content = values.get("content", "").strip()
            if content and name in ("author", "description"):
                self.metadata[name] = content
            elif content and name in ("date", "dcterms.date", "article:published_time", "dc.date"):
                self.metadata["date"] = content
            return
        if tag == "head":
            self.in_head = True
            return
        if tag == "body":
            self.in_head = False
        if tag == "title" and not self.skip_depth:
            self.in_title = True
            return
        if tag in _SKIP:
            if tag not in _VOID:
                self.skip_depth += 1
            return
        if self.skip_depth:
            return
        if re.fullmatch(r"h[1-6]", tag):
            self.heading = int(tag[1])
            self.out.append("\n\n" + "#" * self.heading + " ")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag == "tr":
            self.cells = []
            self.out.append("\n")
        elif tag in ("td", "th") and self.cells is not None:
            if self.cells:
                self.out.append(" | ")
            self.cells.append(tag)
        elif tag == "br":
            self.out.append("\n")
        elif tag in _BLOCKS:
            self.out.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self.in_head = False
        if tag == "title":
            self.in_title = False
            return
        if tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if self.skip_depth:
            return
        if re.fullmatch(r"h[1-6]", tag):
            self.heading = None
            self.out.append("\n\n")
        elif tag == "tr":
            self.cells = None
        elif tag in _BLOCKS:
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title += data
            return
        if self.skip_depth or self.in_head:
            return
        if self.heading is not None:
            data = " ".join(data.split())  # a heading stays on its one line
            if data:
                self.out.append(data + " ")
            return
        self.out.append(re.sub(r"\s+", " ", data))


def _read_html(data: bytes) -> tuple[str, str, dict[str, Any]]:
    parser = _HTMLText()
    parser.feed(_decode(data))
    parser.close()
    text = "\n".join(line.strip() for line in "".join(parser.out).split("\n"))
    metadata = dict(parser.metadata)
    title = " ".join(parser.title.split())
    if title:
        metadata["title"] = title
    return text, "html", metadata


# --- PDF ---------------------------------------------------------------------------------------------


def _pdf_date(value: object) -> str | None:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    text = str(value or "")
    match = re.match(r"(?:D:)?(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?", text)
    if not match:
        return None
    year, month, day, hour, minute, second = (int(g) if g else None for g in match.groups())
    try:
        return dt.datetime(year or 1, month or 1, day or 1, hour or 0, minute or 0, second or 0).isoformat()
    except ValueError:
        return None


def _read_pdf(data: bytes) -> tuple[str, str, dict[str, Any]]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(BytesIO(data), strict=False)
    except PdfReadError:
        raise ExtractionError("the PDF could not be read (damaged?)") from None
    if reader.is_encrypted:
        try:
            opened = bool(reader.decrypt(""))
        except Exception:
            opened = False
        if not opened:
            raise ExtractionError("the PDF is protected by a password")
    pages = [(page.extract_text() or "").strip() for page in reader.pages]
    text = "\n\n".join(page for page in pages if page)
    if not text.strip():
        raise ExtractionError("the PDF has no text to read (a scanned image?)")
    metadata: dict[str, Any] = {"pages": len(pages)}
    info = reader.metadata
    if info is not None:
        if info.get("/Title"):
            metadata["title"] = str(info.get("/Title")).strip()
        if info.get("/Author"):
            metadata["author"] = str(info.get("/Author")).strip()
        created = _pdf_date(info.get("/CreationDate"))
        modified = _pdf_date(info.get("/ModDate"))
        if created:
            metadata["creation_date"] = created
        if modified or created:
            metadata["date"] = modified or created
    return text, "pdf", metadata


# --- Word --------------------------------------------------------------------------------------------


def _heading_level(style_name: str) -> int | None:
    if style_name == "Title":
        return 1
    match = re.fullmatch(r"Heading ([1-9])", style_name)
    return min(6, int(match.group(1))) if match else None


def _read_docx(data: bytes) -> tuple[str, str, dict[str, Any]]:
    import docx
    from docx.document import Document as DocumentObject
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document: DocumentObject = docx.Document(BytesIO(data))
    blocks: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            if not text:
                continue
            style = block.style.name if block.style is not None else ""
            level = _heading_level(style or "")
            if level:
                blocks.append("#" * level + " " + " ".join(text.split()))
            elif (style or "").startswith("List"):
                blocks.append("- " + text)
            else:
                blocks.append(text)
        elif isinstance(block, Table):
            rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in block.rows]
            blocks.append("\n".join(row for row in rows if row.strip(" |")))
    props = document.core_properties
    metadata: dict[str, Any] = {
        "title": (props.title or "").strip(),
        "author": (props.author or "").strip(),
    }
    if props.created:
        metadata["creation_date"] = props.created.isoformat()
    if props.modified or props.created:
        metadata["date"] = (props.modified or props.created).isoformat()
    if props.language:
        metadata["languages"] = [props.language.split("-")[0].lower()]
    return "\n\n".join(blocks), "docx", metadata


_READERS = {
    filetypes.TEXT: _read_text,
    filetypes.MARKDOWN: _read_markdown,
    filetypes.HTML: _read_html,
    filetypes.PDF: _read_pdf,
    filetypes.DOCX: _read_docx,
}


# --- language ----------------------------------------------------------------------------------------

# The commonest short words of each language: enough to tell them apart in a page of prose.
_STOPWORDS = {
    "en": "the and of to in is that it for was on are with as be this by not or have from",
    "fr": "le la les de des et est un une du en que qui dans pour pas sur au avec ce",
    "de": "der die das und ist nicht ein eine zu den mit von sich auf für im dem des auch",
    "es": "el la los las de y que en un una es por con para del se no al lo como",
    "it": "il la di e che un una per non con del della sono gli le si al nel anche",
    "pt": "o a os as de e que em um uma do da para com não por no na se ao",
    "nl": "de het een en van is dat op te in niet met voor zijn er aan ook als bij",
}
_STOPSETS = {lang: frozenset(words.split()) for lang, words in _STOPWORDS.items()}


def guess_languages(text: str) -> list[str]:
    """``[code]`` of the language whose common words fill the most of ``text``, when they fill a
    clear share of it (at least 12 % of at least 30 words, and well ahead of the next); else ``[]``."""
    words = re.findall(r"[^\W\d_]+", text[:20000].lower())
    if len(words) < 30:
        return []
    scores = sorted(
        ((sum(w in s for w in words) / len(words), lang) for lang, s in _STOPSETS.items()), reverse=True
    )
    (best, lang), (second, _) = scores[0], scores[1]
    if best >= 0.12 and best >= second * 1.5:
        return [lang]
    return []
