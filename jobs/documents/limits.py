"""The Messages API's limits on PDFs, and routeq's token estimate for a page sent natively.

The API bills a native PDF page as its extracted text plus an image of the page (roughly 1,500 to
3,000 tokens a page). Routing, cache breakpoints and the context-window refusal all use
``pages * PDF_TOKENS_PER_PAGE`` for a native PDF, so this is the one place the estimate lives.
"""

from __future__ import annotations

from jobs.contract import CHARS_PER_TOKEN

MAX_PDF_PAGES = 100
MAX_PDF_BYTES = 32 * 1024 * 1024
# An image's worth (~1,500) plus a typical page of text (~2,000 characters, ~500 tokens).
PDF_TOKENS_PER_PAGE = 2_000


class DocumentError(ValueError):
    """A document routeq cannot send: the message says why, in one line, without the file's name."""


def text_tokens(text: str) -> int:
    """~4 characters a token, rounded up (the worker's layout uses the same rule)."""
    return -(-len(text) // CHARS_PER_TOKEN)


def pdf_native_tokens(pages: int) -> int:
    return pages * PDF_TOKENS_PER_PAGE


__all__ = [
    "CHARS_PER_TOKEN",
    "MAX_PDF_BYTES",
    "MAX_PDF_PAGES",
    "PDF_TOKENS_PER_PAGE",
    "DocumentError",
    "pdf_native_tokens",
    "text_tokens",
]
