"""The stand-in's tokenizer: a fixed, documented rule so tests can predict every count.

Rule: a piece of text costs ``ceil(len(text) / 4)`` tokens (``len`` in Unicode code points). A request's
input is the sum over its blocks, in the order tools -> system -> messages:
  - each tool: its JSON (keys sorted, compact, without ``cache_control``);
  - ``system`` as a string: that string; as a list: each text block's ``text``;
  - each message: a string content counts as one text block; in a list, a text block counts its
    ``text`` and any other block its JSON (keys sorted, compact, without ``cache_control``).
  - a ``document`` block: a PDF costs ``PDF_PAGE_IMAGE_TOKENS`` (1,500) a page plus its text layer by
    the text rule; a plain-text source its text (``worker/sandbox/mock_api/documents.py``).
There is no per-message or per-request overhead. Output text is counted with the same rule.
"""

from __future__ import annotations

from typing import Any

import orjson

CHARS_PER_TOKEN = 4


def count_text(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def canonical_json(block: dict[str, Any]) -> str:
    """A block's JSON for counting and hashing; its cache_control does not change what is cached."""
    if "cache_control" in block:
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return orjson.dumps(block, option=orjson.OPT_SORT_KEYS).decode()
