"""Signals of answers over given inputs: extraction grounding, classification labels, QA quotes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from worker.policy.answer_checks.score import Signals

EXTRACTION_SIGNALS = ("ungrounded_share", "missing_required")
CLASSIFICATION_SIGNALS = ("label_outside", "several_labels")
QA_SIGNALS = ("unfound_quote_share",)
_QUOTE = re.compile(r"\"([^\"]{12,400})\"|“([^”]{12,400})”")
_SPACE = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip().lower()


def _leaves(value: Any) -> Iterable[str]:
    """Every scalar value of a JSON value, as text (numbers included, booleans and null left out)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, str):
        if value.strip():
            yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield f"{value:g}" if isinstance(value, float) else str(value)


def extraction(value: Any, sources: Sequence[str], required: Sequence[str]) -> tuple[Signals, list[str]]:
    """Values not found in the source documents, and required fields missing or null."""
    out: Signals = {"ungrounded_share": 0.0, "missing_required": 0.0}
    reasons: list[str] = []
    haystack = _norm("\n".join(sources))
    leaves = list(_leaves(value))
    if haystack and leaves:
        ungrounded = [v for v in leaves if _norm(v) not in haystack]
        if ungrounded:
            out["ungrounded_share"] = len(ungrounded) / len(leaves)
            reasons.append(f"{len(ungrounded)} of {len(leaves)} extracted values not in the documents")
    if isinstance(value, dict) and required:
        missing = [k for k in required if value.get(k) in (None, "", [], {})]
        if missing:
            out["missing_required"] = len(missing) / len(required)
            reasons.append(f"required field(s) missing or empty: {', '.join(missing[:5])}")
    return out, reasons


def classification(answer: str, value: Any, allowed: Sequence[str]) -> tuple[Signals, list[str]]:
    """A label outside the allowed set, or more than one label where one is asked for."""
    out: Signals = {"label_outside": 0.0, "several_labels": 0.0}
    reasons: list[str] = []
    if not allowed:
        return out, reasons
    labels: list[str]
    if isinstance(value, dict):
        picked = value.get("label", value.get("labels", value.get("category")))
        labels = [str(x) for x in picked] if isinstance(picked, list) else [str(picked)] if picked else []
    elif isinstance(value, list):
        labels = [str(x) for x in value]
    else:
        text = _norm(answer).strip(" .\"'`*")
        named = [a for a in allowed if re.search(rf"\b{re.escape(a.lower())}\b", text)]
        labels = [text] if text in {a.lower() for a in allowed} else named or [text]
    allowed_set = {a.lower() for a in allowed}
    outside = [x for x in labels if x.lower().strip() not in allowed_set]
    if outside or not labels:
        out["label_outside"] = 1.0
        reasons.append("label not among the allowed labels")
    if len({x.lower() for x in labels}) > 1:
        out["several_labels"] = 1.0
        reasons.append(f"{len(labels)} labels where one was asked for")
    return out, reasons


def quotes(answer: str, sources: Sequence[str]) -> tuple[Signals, list[str]]:
    """Quoted passages of the answer that occur in none of the documents."""
    out: Signals = {"unfound_quote_share": 0.0}
    reasons: list[str] = []
    found = [a or b for a, b in _QUOTE.findall(answer)]
    haystack = _norm("\n".join(sources))
    if found and haystack:
        missing = [q for q in found if _norm(q) not in haystack]
        if missing:
            out["unfound_quote_share"] = len(missing) / len(found)
            reasons.append(f"{len(missing)} of {len(found)} quotes are not in the documents")
    return out, reasons
