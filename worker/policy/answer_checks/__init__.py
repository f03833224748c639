"""Answer checks as scores: how likely an answer falls short of what its job asked, with reasons.

``score_answer`` is a pure function of the job's fields and the answer. Today's hard checks
(worker/policy/checks.py: invalid JSON or schema, truncated, refusal, empty) score 1; otherwise the
task's soft signals combine in one logistic model (``score.combine``) whose default coefficients ship as data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobs.contract import OutputFormat
from worker.policy.answer_checks import documents, maths
from worker.policy.answer_checks.score import (
    CheckScore,
    Coefficients,
    Signals,
    combine,
    shipped_coefficients,
    strongest,
)
from worker.policy.checks import NotJSON, check_answer, parse_json_output

__all__ = ["CheckScore", "Coefficients", "family_of", "score_answer", "signals_for"]

HARD_CHECKS: tuple[str, ...] = ("json", "schema", "max_tokens", "refusal", "empty")
# Task type -> the family of signals that applies to it.
_FAMILIES = {
    "reason": "maths",
    "extract": "extraction",
    "classify": "classification",
    "qa": "qa",
}


def family_of(task: str) -> str | None:
    return _FAMILIES.get(task)


def _allowed_labels(output: OutputFormat) -> list[str]:
    schema = output.json_schema or {}
    if isinstance(schema.get("enum"), list):
        return [str(x) for x in schema["enum"]]
    props = schema.get("properties", {})
    for key in ("label", "labels", "category"):
        spec = props.get(key, {}) if isinstance(props, dict) else {}
        enum = spec.get("enum") or (spec.get("items") or {}).get("enum")
        if isinstance(enum, list):
            return [str(x) for x in enum]
    return []


def signals_for(
    task: str, prompt: str, answer: str, docs: Sequence[str], output: OutputFormat
) -> tuple[Signals, list[str]]:
    """The soft signals of ``task``'s family and their reasons (empty for tasks without any)."""
    family = family_of(task)
    if family == "maths":
        return maths.signals(prompt, answer)
    value: Any = None
    if output.type == "json":
        try:
            value = parse_json_output(answer)
        except NotJSON:
            value = None
    if family == "extraction":
        required = (output.json_schema or {}).get("required", [])
        return documents.extraction(value, list(docs) or [prompt], [str(r) for r in required])
    if family == "classification":
        return documents.classification(answer, value, _allowed_labels(output))
    if family == "qa":
        return documents.quotes(answer, list(docs))
    return {}, []


def score_answer(
    task: str,
    prompt: str,
    answer: str | None,
    *,
    documents: Sequence[str] = (),
    output: OutputFormat | None = None,
    stop_reason: str | None = None,
    enabled: Sequence[str] = HARD_CHECKS,
    coefficients: Mapping[str, Coefficients] | None = None,
) -> CheckScore:
    """Score in [0, 1] (1 = a hard check failed) and the reasons behind it."""
    fmt = output or OutputFormat()
    failed = check_answer(answer, stop_reason, fmt, list(enabled))
    if failed:
        return CheckScore(
            1.0, [f"failed check: {name}" for name in failed], tuple(failed), f"check:{failed[0]}"
        )
    family = family_of(task)
    if family is None:
        return CheckScore(0.0, [])
    sig, reasons = signals_for(task, prompt, answer or "", documents, fmt)
    coefs = (coefficients or shipped_coefficients()).get(family)
    if coefs is None:
        return CheckScore(0.0, reasons)
    return CheckScore(combine(sig, coefs), reasons, top_signal=strongest(sig, coefs))
