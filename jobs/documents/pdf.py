"""PDF reader: page count, text layer and images, or the reason the API could not take the file."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

from pypdf import PdfReader
from pypdf.errors import PyPdfError
from pypdf.generic import DictionaryObject

from jobs.documents.limits import MAX_PDF_BYTES, MAX_PDF_PAGES, DocumentError

# A page "has a text layer" when it yields at least this many non-space characters.
MIN_PAGE_TEXT = 20
_HEADER_WINDOW = 1024
_EOF_WINDOW = 2048


@dataclass(frozen=True, slots=True)
class PdfContent:
    pages: int
    page_texts: tuple[str, ...]
    image_pages: int

    @property
    def text_pages(self) -> int:
        return sum(1 for t in self.page_texts if len("".join(t.split())) >= MIN_PAGE_TEXT)

    @property
    def text(self) -> str:
        """The text layer, page by page, each page under a marker so answers can name pages."""
        return "\n\n".join(f"[page {i}]\n{t.strip()}" for i, t in enumerate(self.page_texts, start=1))


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _has_image(page: Any) -> bool:
    resources = page.get("/Resources")
    if resources is None:
        return False
    xobjects = resources.get_object().get("/XObject")
    if xobjects is None:
        return False
    objs = xobjects.get_object()
    if not isinstance(objs, DictionaryObject):
        return False
    return any(obj.get_object().get("/Subtype") == "/Image" for obj in objs.values())


def read_pdf(data: bytes) -> PdfContent:
    """The PDF's pages and text layer; raises :class:`DocumentError` for what the API would refuse."""
    if not data:
        raise DocumentError("empty file")
    if len(data) > MAX_PDF_BYTES:
        raise DocumentError(f"PDF is {_mb(len(data))}, over the API's {_mb(MAX_PDF_BYTES)} limit")
    if b"%PDF-" not in data[:_HEADER_WINDOW]:
        raise DocumentError("not a PDF (no %PDF- header)")
    if b"%%EOF" not in data[-_EOF_WINDOW:]:
        raise DocumentError("damaged PDF: truncated (no %%EOF marker at the end)")
    # pypdf logs every repair it makes; the one-line reason below is what the user needs.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise DocumentError("encrypted PDF (password-protected): the API cannot read it")
        pages = len(reader.pages)
        if pages == 0:
            raise DocumentError("empty PDF (no pages)")
        if pages > MAX_PDF_PAGES:
            raise DocumentError(f"PDF has {pages} pages, over the API's {MAX_PDF_PAGES}-page limit")
        texts = tuple(page.extract_text() or "" for page in reader.pages)
        images = sum(1 for page in reader.pages if _has_image(page))
    except DocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        raise DocumentError(f"damaged PDF: {type(e).__name__}: {e}".rstrip(": ")) from None
    return PdfContent(pages=pages, page_texts=texts, image_pages=images)
