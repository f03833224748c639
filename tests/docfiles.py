"""Real document files for tests: text PDFs (fpdf2), PDFs with an image, encrypted, damaged and empty
PDFs (pypdf), DOCX files (python-docx) and HTML pages."""

from __future__ import annotations

import hashlib
import io
import random

import docx
from fpdf import FPDF
from PIL import Image
from pypdf import PdfReader, PdfWriter

_WORDS = ("agreement", "party", "term", "notice", "liability", "clause", "payment", "renewal", "fees")


def filler(seed: int, chars: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(chars // 6))[:chars]


def text_pdf(pages: int = 2, *, seed: int = 0, chars_per_page: int = 1800, title: str = "Contract") -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=9)
    for i in range(pages):
        pdf.add_page()
        pdf.multi_cell(0, 4, f"{title} page {i + 1}. " + filler(seed * 1000 + i, chars_per_page))
    return bytes(pdf.output())


def image_pdf() -> bytes:
    """One page with a little text and a drawn figure (a raster image)."""
    img = Image.new("RGB", (64, 64), (200, 30, 30))
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=11)
    pdf.multi_cell(0, 5, "Figure 1 shows quarterly revenue by region, with the totals below. " * 3)
    pdf.image(img, x=20, y=60, w=40)
    return bytes(pdf.output())


def encrypted_pdf() -> bytes:
    w = PdfWriter()
    w.append(PdfReader(io.BytesIO(text_pdf(1))))
    w.encrypt("secret")
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()


def empty_pdf() -> bytes:
    out = io.BytesIO()
    PdfWriter().write(out)
    return out.getvalue()


def truncated_pdf() -> bytes:
    data = text_pdf(2)
    return data[: len(data) // 2]


def sample_docx() -> bytes:
    d = docx.Document()
    d.add_heading("Service Agreement", 1)
    d.add_paragraph("This agreement is between Acme and Beta.")
    d.add_heading("Fees", 2)
    t = d.add_table(rows=3, cols=2)
    for r, (a, b) in enumerate((("Item", "Fee"), ("Setup", "100 USD"), ("Support", "20 USD/month"))):
        t.cell(r, 0).text, t.cell(r, 1).text = a, b
    d.add_paragraph("Either party may terminate with 30 days notice.", style="List Bullet")
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


SAMPLE_HTML = b"""<!doctype html><html><head><meta charset="utf-8"><title>Q3</title>
<style>body { color: red }</style><script>var secret = "do-not-include";</script></head>
<body><h1>Quarterly Report</h1><p>Revenue grew <b>12%</b> in Q3.</p>
<h2>By region</h2><table><tr><th>Region</th><th>Revenue</th></tr>
<tr><td>EMEA</td><td>4.2M</td></tr><tr><td>APAC</td><td>3.1M</td></tr></table>
<ul><li>Costs fell</li><li>Margins rose</li></ul></body></html>"""


def noise_pdf(kib: int) -> bytes:
    """A one-page PDF carrying about ``kib`` KiB of incompressible image data (a scan's worth)."""
    side = int((kib * 1024 / 3) ** 0.5)
    img = Image.frombytes("RGB", (side, side), hashlib.shake_256(b"noise").digest(side * side * 3))
    pdf = FPDF()
    pdf.add_page()
    pdf.image(img, x=10, y=10, w=100)
    return bytes(pdf.output())
