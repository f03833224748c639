"""Shadow-quality monitoring: sample jobs, compare the cheap answer with the top tier's, keep score.

A shadowed job is answered by the tier it was routed to *and* by the top tier. The two answers are
compared cheaply when the task allows (``compare``), else by a grading call to the top tier
(``grading_prompt`` / ``parse_grade``). Outcomes are counted per task and tier in ``Keys.quality`` and
kept as labelled prompts in ``Keys.quality_labels``, which ``export_labels`` writes as a training CSV
for ``routeq router train`` (same columns as the RouteLLM data).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

from jobs.contract import TaskType
from worker.policy.checks import NotJSON, parse_json_output

CSV_COLUMNS = ("domain", "prompt", "weak_correct", "strong_correct")

# Tasks whose answers are short, closed-form values: a textual mismatch is a real disagreement.
_CLOSED_TASKS = frozenset({TaskType.classify})
# Tasks often answered as structured data; a JSON mismatch is decisive, a prose mismatch is not.
_STRUCTURED_TASKS = frozenset({TaskType.classify, TaskType.extract})


def should_shadow(job_id: str, rate: float) -> bool:
    """Whether to shadow this job: a stable hash of the id below ``rate``, so every worker (and a
    re-run of the same job) makes the same choice and the sample is uniform over ids."""
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    h = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big")
    return h < rate * 2**64


_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = " \t\n\"'`.,;:!?()[]{}*_"


def normalise(text: str) -> str:
    """Case-, space-, quote- and edge-punctuation-insensitive form of a short answer."""
    t = unicodedata.normalize("NFKC", text).strip()
    if t.startswith("```"):
        t = t.strip("`")
        t = t.split("\n", 1)[1] if "\n" in t else t
    return _SPACE.sub(" ", t.lower()).strip(_EDGE_PUNCT)


def _json_or_none(text: str) -> tuple[bool, Any]:
    try:
        return True, parse_json_output(text)
    except NotJSON:
        return False, None


def compare(task: TaskType, a: str, b: str) -> bool | None:
    """Do two answers agree? True/False when that can be decided without a model; None = grade it.

    Both valid JSON -> equal values. Equal after normalisation -> True. Otherwise a mismatch is decisive
    only for closed-form tasks (classify) or when the task expects structured output and both are JSON.
    """
    a_json, va = _json_or_none(a)
    b_json, vb = _json_or_none(b)
    if a_json and b_json:
        if va == vb:
            return True
        if task in _STRUCTURED_TASKS:
            return False
    if normalise(a) == normalise(b):
        return True
    if task in _CLOSED_TASKS:
        return False
    return None


_VERDICT = re.compile(r"VERDICT\s*:\s*(AGREE|DISAGREE|PASS|FAIL)", re.IGNORECASE)


def grading_prompt(task: TaskType, prompt: str, reference: str, candidate: str) -> str:
    """The text of a grading request to the top tier: is the candidate as good as the reference?"""
    return (
        "You are grading whether a cheaper model's answer is acceptable in place of a stronger model's.\n"
        f"Task type: {task.value}\n\n"
        f"<task>\n{prompt}\n</task>\n\n"
        f"<reference_answer>\n{reference}\n</reference_answer>\n\n"
        f"<candidate_answer>\n{candidate}\n</candidate_answer>\n\n"
        "The candidate is acceptable if it is correct and complete for the task and a user would be as "
        "well served by it as by the reference; wording and style may differ. Think briefly, then end "
        "with exactly one line: VERDICT: AGREE (acceptable) or VERDICT: DISAGREE (not acceptable)."
    )


def parse_grade(text: str) -> bool:
    """The grader's verdict (the last one given). No verdict counts as disagreement: the safe side,
    since it can only make routing more cautious."""
    found = _VERDICT.findall(text or "")
    return bool(found) and found[-1].upper() in ("AGREE", "PASS")


def render_quality(rep: dict[str, Any]) -> str:
    """`routeq quality` as a table: agreement of each task and tier with the top tier's answers."""
    tasks = _render_tasks(rep.get("tasks") or {})
    if not rep["by"]:
        return "\n".join(
            ["no shadow comparisons yet (set ROUTEQ_SHADOW_RATE on the workers to sample some)", *tasks]
        )
    hdr = f"{'task':<12}{'tier':<8}{'agree':>7}{'total':>7}{'rate':>8}"
    lines = [hdr, "-" * len(hdr)]
    for name, e in rep["by"].items():
        task, _, tier = name.partition(":")
        lines.append(f"{task:<12}{tier:<8}{int(e['agree']):>7}{int(e['total']):>7}{e['rate']:>8.1%}")
    o = rep["overall"]
    lines.append("-" * len(hdr))
    lines.append(f"{'all':<20}{o['agree']:>7}{o['total']:>7}{o['rate']:>8.1%}")
    lines.append(f"shadow spend ${rep['shadow_cost_usd']:.6f}; {rep['labels']} labelled prompts kept")
    return "\n".join(lines + tasks)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _render_tasks(tasks: dict[str, Any]) -> list[str]:
    """The cascade's calibration per task: labels, held-out kept quality vs target, escalation rate."""
    if not tasks:
        return []
    hdr = f"{'task':<12}{'labels':>7}{'quality':>9}{'target':>8}{'escalated':>11}  thresholds"
    lines = ["", hdr, "-" * len(hdr)]
    for task, t in tasks.items():
        lines.append(
            f"{task:<12}{t['labels']:>7}{_pct(t['kept_quality_held_out']):>9}{_pct(t['target']):>8}"
            f"{_pct(t['escalation_rate_held_out']):>11}  {t['note']}"
        )
    return lines


def label_row(label: dict[str, Any]) -> dict[str, str] | None:
    """A training row from a shadow label, or None if it has no prompt.

    The top tier's answer is the reference, so it counts as correct (strong_correct True); the cheap
    answer is correct when it agreed with it. So agree -> (True, True), disagree -> (False, True): the
    "strong wins" prompts a router should escalate. domain = the task type."""
    prompt = label.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return None
    return {
        "domain": str(label.get("task", "other")),
        "prompt": prompt,
        "weak_correct": str(bool(label.get("agree"))),
        "strong_correct": "True",
    }
