"""DOCX to clean text: headings as ``#`` lines, list items as ``-``, tables as Markdown rows, in order."""

from __future__ import annotations

import io
import re
import zipfile

import docx
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table
from docx.text.paragraph import Paragraph

from jobs.documents.limits import DocumentError

_HEADING = re.compile(r"^Heading (\d)$")  # Word's built-in style names


def _paragraph(p: Paragraph) -> str:
    text = p.text.strip()
    if not text:
        return ""
    style = p.style.name if p.style is not None and p.style.name else ""
    if style == "Title":
        return f"# {text}"
    m = _HEADING.match(style)
    if m:
        return f"{'#' * min(6, int(m.group(1)))} {text}"
    if style.startswith("List"):
        return f"- {text}"
    return text


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(t: Table) -> str:
    rows = [[_cell(c.text) for c in row.cells] for row in t.rows]
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = [f"| {' | '.join(rows[0])} |", f"|{'---|' * width}"]
    lines += [f"| {' | '.join(r)} |" for r in rows[1:]]
    return "\n".join(lines)


def docx_to_text(data: bytes) -> str:
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise DocumentError("not a DOCX file (not a zip archive)")
    try:
        document = docx.Document(io.BytesIO(data))
        parts = [
            _paragraph(block) if isinstance(block, Paragraph) else _table(block)
            for block in document.iter_inner_content()
        ]
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise DocumentError(f"damaged DOCX: {type(e).__name__}: {e}") from None
    text = "\n\n".join(p for p in parts if p)
    if not text:
        raise DocumentError("DOCX has no text")
    return text
