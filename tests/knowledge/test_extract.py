"""Extraction from real files of every type, made here with the libraries that write them."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import docx
import pytest
from fpdf import FPDF

from core import filetypes
from knowledge.extract import ExtractionError, extract, guess_languages

PROSE = (
    "The lighthouse was built on the northern cliff in 1847 and it has guided the fishing boats "
    "of the town ever since. The keepers lived in the cottages at the foot of the tower with their "
    "families, and they took turns to watch the light through the night."
)


def make_pdf(text: str = PROSE, *, title: str = "Lighthouse notes", password: str | None = None) -> bytes:
    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_author("Ellen Voss")
    pdf.set_creation_date(dt.datetime(2024, 3, 5, 10, 30, tzinfo=dt.UTC))
    if password:
        pdf.set_encryption(owner_password="owner", user_password=password)
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 8, text)
    pdf.add_page()
    pdf.multi_cell(0, 8, "Second page: the fog horn sounded for the last time in 1987.")
    return bytes(pdf.output())


def make_docx() -> bytes:
    document = docx.Document()
    document.core_properties.title = "Port Aldric history"
    document.core_properties.author = "Hamish Dunn"
    document.core_properties.created = dt.datetime(2023, 6, 1, 9, 0)
    document.add_heading("Port Aldric", level=1)
    document.add_paragraph(PROSE)
    document.add_heading("The keepers", level=2)
    document.add_paragraph("Ellen Voss kept the light for 23 years.")
    document.add_paragraph("A rescue in 1881", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "year"
    table.cell(0, 1).text = "event"
    table.cell(1, 0).text = "1991"
    table.cell(1, 1).text = "automated"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


HTML = b"""<!DOCTYPE html><html lang="en-GB"><head><title>Verona 900 care</title>
<meta name="author" content="Verona Appliances"><style>h1 { color: red; }</style>
<script>var secret = "do not index me";</script></head>
<body><h1>Verona   900</h1><p>The machine makes espresso &amp; steams milk.</p>
<h2>Descaling</h2><ul><li>Dissolve one sachet</li><li>Hold two buttons</li></ul>
<table><tr><td>Power</td><td>2,300 W</td></tr></table><noscript>enable js</noscript></body></html>"""


def test_pdf_text_pages_and_properties() -> None:
    result = extract(make_pdf(), filename="notes.pdf")
    assert result.format == "pdf"
    assert "guided the fishing boats" in result.text
    assert "fog horn sounded" in result.text  # the second page too
    assert result.metadata["title"] == "Lighthouse notes"
    assert result.metadata["author"] == "Ellen Voss"
    assert result.metadata["creation_date"].startswith("2024-03-05")
    assert result.metadata["pages"] == 2
    assert result.metadata["languages"] == ["en"]


def test_pdf_with_a_password_is_refused() -> None:
    with pytest.raises(ExtractionError, match="password"):
        extract(make_pdf(password="s3cret"), filename="locked.pdf")


def test_docx_headings_become_markdown_and_properties_metadata() -> None:
    result = extract(make_docx(), filename="history.docx")
    assert result.format == "docx"
    assert "# Port Aldric" in result.text.splitlines()
    assert "## The keepers" in result.text.splitlines()
    assert "- A rescue in 1881" in result.text
    assert "1991 | automated" in result.text
    assert result.metadata["title"] == "Port Aldric history"
    assert result.metadata["author"] == "Hamish Dunn"
    assert result.metadata["creation_date"].startswith("2023-06-01")


def test_html_keeps_headings_drops_scripts_and_styles() -> None:
    result = extract(HTML, filename="page.html")
    lines = result.text.splitlines()
    assert result.format == "html"
    assert "# Verona 900" in lines
    assert "## Descaling" in lines
    assert "- Dissolve one sachet" in lines
    assert "Power | 2,300 W" in lines
    assert "espresso & steams milk" in result.text
    assert "do not index me" not in result.text and "color" not in result.text
    assert "enable js" not in result.text
    assert result.metadata["title"] == "Verona 900 care"
    assert result.metadata["author"] == "Verona Appliances"
    assert result.metadata["languages"] == ["en"]


def test_html_without_closing_head_or_html_tags() -> None:
    result = extract(
        b"<html><head><title>T</title><link rel=x><body><h2>Part</h2>Body text", filename="a.htm"
    )
    assert result.text == "## Part\n\nBody text"
    assert result.metadata["title"] == "T"


def test_markdown_and_text() -> None:
    md = extract("\ufeff# Recipe\n\nMix the flour.\n".encode(), filename="bread.md")
    assert (md.format, md.text, md.metadata["title"]) == ("markdown", "# Recipe\n\nMix the flour.", "Recipe")
    txt = extract(b"Plain words.\r\nSecond line.", filename="a.txt")
    assert (txt.format, txt.text, txt.metadata["title"]) == ("text", "Plain words.\nSecond line.", "a.txt")


def test_sniffing_goes_by_content_not_name() -> None:
    pdf = make_pdf()
    assert filetypes.sniff(pdf, "report.txt") == filetypes.PDF
    assert extract(pdf, filename="report.txt").format == "pdf"
    assert filetypes.sniff(make_docx(), "x.pdf") == filetypes.DOCX
    assert filetypes.sniff(HTML, "page.txt") == filetypes.HTML


@pytest.mark.parametrize(
    "data",
    [
        b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(200),  # a Windows .exe
        b"\x7fELF\x02\x01\x01\x00" + bytes(200),
    ],
)
def test_binary_renamed_pdf_is_refused(data: bytes) -> None:
    with pytest.raises(filetypes.UnsupportedType):
        filetypes.sniff(data, "invoice.pdf")
    with pytest.raises(ExtractionError, match="unsupported"):
        extract(data, filename="invoice.pdf")


def test_zip_renamed_pdf_is_refused() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("payload.txt", "hello")
    with pytest.raises(ExtractionError, match="unsupported"):
        extract(out.getvalue(), filename="invoice.pdf")


def test_corrupt_files_give_a_clear_error() -> None:
    pdf = make_pdf()
    with pytest.raises(ExtractionError, match="PDF"):
        extract(pdf[: len(pdf) // 3], filename="cut.pdf")
    with pytest.raises(ExtractionError, match="PDF"):
        extract(b"%PDF-1.7\n" + bytes(range(256)) * 4, filename="junk.pdf")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word/document.xml", "<not really xml")
    with pytest.raises(ExtractionError, match="Word document"):
        extract(out.getvalue(), filename="broken.docx")


def test_pdf_without_text_is_refused() -> None:
    pdf = FPDF()
    pdf.add_page()
    with pytest.raises(ExtractionError, match="no text"):
        extract(bytes(pdf.output()), filename="scan.pdf")


def test_language_guess_is_honest() -> None:
    assert guess_languages(PROSE) == ["en"]
    french = (
        "Le phare a été construit sur la falaise et il guide les bateaux de pêche de la ville depuis. " * 2
    )
    assert guess_languages(french) == ["fr"]
    assert guess_languages("E12 E47 E50") == []  # too little to tell
