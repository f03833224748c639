"""``document`` content blocks, as the API takes them: base64 PDFs and plain-text sources.

A PDF page costs a fixed image estimate plus its text layer (counted with the text rule), so a PDF's
count is ``pages * PDF_PAGE_IMAGE_TOKENS + count_text(text layer)``. Malformed base64 or bytes that are
not a readable PDF are the API's 400 invalid_request_error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pypdf import PdfReader
from pypdf.errors import PyPdfError

from worker.sandbox.mock_api.errors import invalid
from worker.sandbox.mock_api.tokens import count_text

PDF_PAGE_IMAGE_TOKENS = 1_500
MAX_PDF_PAGES = 100
MAX_PDF_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DocumentBlock:
    media_type: str  # "application/pdf" | "text/plain"
    identity: bytes  # what the prompt cache hashes: the source's media type, content digest, title
    tokens: int
    text: str


_COUNTED: OrderedDict[bytes, tuple[int, str] | str] = OrderedDict()
_COUNTED_MAX = 64


def _pdf_counts(digest: bytes, data: bytes) -> tuple[int, str] | str:
    """(pages, text layer) or the reason the PDF is unreadable; remembered by digest, as PDFs repeat."""
    got = _COUNTED.get(digest)
    if got is None:
        got = _COUNTED[digest] = _read_pdf(data)
        if len(_COUNTED) > _COUNTED_MAX:
            _COUNTED.popitem(last=False)
    return got


def _read_pdf(data: bytes) -> tuple[int, str] | str:
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            return "password-protected PDFs are not supported"
        pages = len(reader.pages)
        text = "\n".join(p.extract_text() or "" for p in reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError):
        return "The PDF specified was not valid."
    if pages == 0:
        return "The PDF specified has no pages."
    return pages, text


def parse_document(block: dict[str, Any], where: str) -> DocumentBlock:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid(f"{where}.source: Field required")
    title = block.get("title")
    if title is not None and not isinstance(title, str):
        raise invalid(f"{where}.title: Input should be a valid string")
    kind, media, data = source.get("type"), source.get("media_type"), source.get("data")
    if not isinstance(data, str):
        raise invalid(f"{where}.source.data: Field required")
    label = (title or "").encode()
    if kind == "text":
        if media != "text/plain":
            raise invalid(f"{where}.source.media_type: Input should be 'text/plain'")
        digest = hashlib.blake2b(data.encode(), digest_size=16).digest()
        return DocumentBlock("text/plain", b"text/plain\0" + digest + label, count_text(data), data)
    if kind != "base64":
        raise invalid(f"{where}.source.type: Input should be 'base64' or 'text'")
    if media != "application/pdf":
        raise invalid(f"{where}.source.media_type: Input should be 'application/pdf'")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{where}.source.data: The base64 data is not valid.") from None
    if len(raw) > MAX_PDF_BYTES:
        raise invalid(f"{where}: PDF is {len(raw)} bytes; the maximum is {MAX_PDF_BYTES}")
    if not raw.startswith(b"%PDF-"):
        raise invalid(f"{where}: The PDF specified was not valid.")
    digest = hashlib.blake2b(raw, digest_size=16).digest()
    got = _pdf_counts(digest, raw)
    if isinstance(got, str):
        raise invalid(f"{where}: {got}")
    pages, text = got
    if pages > MAX_PDF_PAGES:
        raise invalid(f"{where}: A maximum of {MAX_PDF_PAGES} PDF pages may be provided.")
    tokens = pages * PDF_PAGE_IMAGE_TOKENS + count_text(text)
    return DocumentBlock("application/pdf", b"application/pdf\0" + digest + label, tokens, text)
