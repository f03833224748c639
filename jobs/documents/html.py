"""HTML to clean text: headings, lists and tables kept as Markdown structure; scripts and styles dropped."""

from __future__ import annotations

import re

from bs4 import BeautifulSoup
from markdownify import MarkdownConverter

from jobs.documents.limits import DocumentError

# Elements whose content is never part of what a reader sees.
_INVISIBLE = ("script", "style", "noscript", "template", "head", "svg", "iframe")
_BLANK_RUNS = re.compile(r"\n{3,}")  # on the converted text, not on HTML


def html_to_text(data: bytes) -> str:
    """The page's visible text as Markdown (``#`` headings, ``|`` tables); the encoding is detected."""
    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(_INVISIBLE):
        tag.decompose()
    body = soup.body or soup
    text = MarkdownConverter(heading_style="ATX", bullets="-", strip=["img"]).convert_soup(body)
    text = _BLANK_RUNS.sub("\n\n", text).strip()
    if not text:
        raise DocumentError("HTML has no visible text")
    return text
