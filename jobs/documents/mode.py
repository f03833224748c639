"""How to send a PDF: natively (text + an image per page: layout, tables and figures kept) or as its
extracted text (much cheaper, when the text layer says it all). A pure decision, with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jobs.contract import PdfMode, TaskType
from jobs.documents.limits import CHARS_PER_TOKEN, DocumentError, pdf_native_tokens

SendAs = Literal["native", "text"]

# Tasks whose answers depend on where things sit on the page (forms, tables, line items).
LAYOUT_TASKS: frozenset[TaskType] = frozenset({TaskType.extract})


@dataclass(frozen=True, slots=True)
class PdfFacts:
    pages: int
    text_pages: int  # pages with an extractable text layer
    image_pages: int  # pages that draw an image (figures, scans, logos)
    text_chars: int


@dataclass(frozen=True, slots=True)
class PdfChoice:
    mode: SendAs
    reason: str


def choose_pdf_mode(requested: PdfMode, facts: PdfFacts, task: TaskType | None) -> PdfChoice:
    """``auto``: text when every page has a text layer, no page draws an image and the task does not
    need layout; native otherwise. ``text`` on a PDF without any text layer is refused (nothing to send)."""
    native_tokens = pdf_native_tokens(facts.pages)
    as_text = -(-facts.text_chars // CHARS_PER_TOKEN)
    cost = f"~{as_text} tokens as text vs ~{native_tokens} native"
    if requested == "native":
        return PdfChoice("native", f"native requested; {cost}")
    if requested == "text":
        if facts.text_pages == 0:
            raise DocumentError("mode text, but the PDF has no text layer (scanned?); use native or auto")
        return PdfChoice(
            "text", f"text requested; text layer on {facts.text_pages}/{facts.pages} pages; {cost}"
        )
    if facts.text_pages < facts.pages:
        return PdfChoice(
            "native", f"auto: text layer on only {facts.text_pages}/{facts.pages} pages (scanned?)"
        )
    if facts.image_pages:
        return PdfChoice("native", f"auto: {facts.image_pages}/{facts.pages} pages have images or figures")
    if task in LAYOUT_TASKS:
        return PdfChoice("native", f"auto: task {task.value if task else '?'} needs the layout; {cost}")
    return PdfChoice("text", f"auto: text layer on all {facts.pages} pages, no images; {cost}")
