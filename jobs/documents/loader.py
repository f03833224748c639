"""One entry point from a file to a job document, for the folder reader and JSONL path references.

Each supported file becomes a :class:`~jobs.contract.Document` referring to its content by hash (the
content rides along for the producer to store once per batch): text, HTML and DOCX as text; PDF natively
or as its text layer, as :func:`~jobs.documents.mode.choose_pdf_mode` decides. A file routeq cannot send
raises :class:`DocumentError` with the reason; a type it does not read is :func:`supported` False.
"""

from __future__ import annotations

from pathlib import Path

from jobs.contract import Document, PdfMode, TaskType
from jobs.documents.limits import DocumentError, pdf_native_tokens, text_tokens
from jobs.documents.mode import PdfFacts, choose_pdf_mode

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
PDF_SUFFIXES = (".pdf",)
DOCX_SUFFIXES = (".docx",)
SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + PDF_SUFFIXES + DOCX_SUFFIXES


def supported(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def _decode(data: bytes) -> str:
    try:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")  # a UTF-8 BOM is not text
    except UnicodeDecodeError as e:
        raise DocumentError(f"invalid UTF-8 at byte {e.start}") from None
    if not text.strip():
        raise DocumentError("document is empty")
    return text


def _as_text(text: str, name: str, source: str | None, **pdf: object) -> Document:
    return Document.stored(text.encode(), name=name, tokens=text_tokens(text), source=source, **pdf)


def load_bytes(
    data: bytes,
    suffix: str,
    *,
    name: str,
    source: str | None = None,
    task: TaskType | None = None,
    mode: PdfMode = "auto",
) -> Document:
    """The document for ``data`` read as a file of type ``suffix`` (``.pdf``, ``.html``, ...)."""
    # The format readers are imported on first use: together they are ~30 MB of a worker's memory, and
    # workers (which import this module for job intake) never read a file.
    suffix = suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return _as_text(_decode(data), name, source)
    if suffix in HTML_SUFFIXES:
        from jobs.documents.html import html_to_text

        return _as_text(html_to_text(data), name, source)
    if suffix in DOCX_SUFFIXES:
        from jobs.documents.docx import docx_to_text

        return _as_text(docx_to_text(data), name, source)
    if suffix in PDF_SUFFIXES:
        from jobs.documents.pdf import read_pdf

        pdf = read_pdf(data)
        facts = PdfFacts(pdf.pages, pdf.text_pages, pdf.image_pages, sum(len(t) for t in pdf.page_texts))
        choice = choose_pdf_mode(mode, facts, task)
        if choice.mode == "text":
            return _as_text(pdf.text, name, source, pages=pdf.pages, mode="text", mode_reason=choice.reason)
        return Document.stored(
            data,
            name=name,
            media_type="application/pdf",
            pages=pdf.pages,
            tokens=pdf_native_tokens(pdf.pages),
            mode="native",
            mode_reason=choice.reason,
            source=source,
        )
    raise DocumentError(f"unsupported file type {suffix or '(none)'!r}; supported: {', '.join(SUFFIXES)}")


def load_file(
    path: Path,
    *,
    name: str,
    source: str | None = None,
    task: TaskType | None = None,
    mode: PdfMode = "auto",
) -> Document:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DocumentError(f"cannot read: {e.strerror or e}") from None
    return load_bytes(data, path.suffix, name=name, source=source, task=task, mode=mode)
