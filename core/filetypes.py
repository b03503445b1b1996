"""What a file is, read from its bytes (never from its name or the client's claim).

``sniff(data, filename)`` returns a MIME type from the set Nexus accepts, or raises
``UnsupportedType``. The name only breaks ties between text formats, which bytes cannot tell
apart (Markdown and plain text are both UTF-8 text).
"""

from __future__ import annotations

import zipfile
from io import BytesIO

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML = "text/html"
MARKDOWN = "text/markdown"
TEXT = "text/plain"
PNG = "image/png"
JPEG = "image/jpeg"
GIF = "image/gif"
WEBP = "image/webp"

DOCUMENT_TYPES = frozenset({PDF, DOCX, HTML, MARKDOWN, TEXT})
IMAGE_TYPES = frozenset({PNG, JPEG, GIF, WEBP})


class UnsupportedType(ValueError):
    """The bytes are not a type Nexus accepts."""


def _is_text(data: bytes) -> bool:
    sample = data[:65536]
    if b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the sample's end is still text
        return exc.start >= len(sample) - 4 and len(data) > len(sample)
    return True


def sniff(data: bytes, filename: str = "") -> str:
    """The MIME type of ``data``; ``filename`` only tells Markdown from plain text."""
    head = data[:16]
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return WEBP
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(BytesIO(data)) as archive:
                if "word/document.xml" in archive.namelist():
                    return DOCX
        except zipfile.BadZipFile:
            pass
        raise UnsupportedType("an archive that is not a Word document")
    if _is_text(data):
        text = data[:4096].decode("utf-8", errors="ignore").lstrip().lower()
        if text.startswith(("<!doctype html", "<html")) or ("<body" in text and "</" in text):
            return HTML
        if filename.lower().endswith((".md", ".markdown")):
            return MARKDOWN
        return TEXT
    raise UnsupportedType("not a supported file type")
