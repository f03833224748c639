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
from dataclasses import dataclass
from typing import Any

from jobs.contract import TaskType
from worker.policy.answer_checks import family_of, maths
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


def final_numbers_agree(a: str, b: str) -> bool | None:
    """Maths answers that both state a marked final number agree exactly when the numbers are equal;
    None when either states none. On the GSM8K dev answers this decides about half the pairs, and where
    it contradicts the recorded correctness the recorded grading misread "$20.00" as wrong."""
    x, y = maths.stated_final(a), maths.stated_final(b)
    if x is None or y is None:
        return None
    return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))


def compare(task: TaskType, a: str, b: str) -> bool | None:
    """Do two answers agree? True/False when that can be decided without a model; None = grade it.

    Both valid JSON -> equal values. Equal after normalisation -> True. Maths answers that both state a
    final number -> whether the numbers are equal. Otherwise a mismatch is decisive only for
    closed-form tasks (classify) or when the task expects structured output and both are JSON.
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
    if family_of(task.value) == "maths":
        numbers = final_numbers_agree(a, b)
        if numbers is not None:
            return numbers
    if task in _CLOSED_TASKS:
        return False
    return None


_VERDICT = re.compile(r"VERDICT\s*:\s*(AGREE|DISAGREE|PASS|FAIL)", re.IGNORECASE)
_GRADING_HEAD = (
    "You are grading whether a cheaper model's answer is acceptable in place of a stronger model's.\n"
)
_GRADING_TAIL = (
    "The candidate is acceptable if it is correct and complete for the task and a user would be as "
    "well served by it as by the reference; wording and style may differ. Think briefly, then end "
    "with exactly one line: VERDICT: AGREE (acceptable) or VERDICT: DISAGREE (not acceptable)."
)
_GRADING = re.compile(
    re.escape(_GRADING_HEAD)
    + r"Task type: (?P<task>[a-z_]+)\n\n<task>\n(?P<prompt>.*?)\n</task>\n\n"
    + r"<reference_answer>\n(?P<reference>.*?)\n</reference_answer>\n\n"
    + r"<candidate_answer>\n(?P<candidate>.*)\n</candidate_answer>\n\n"
    + re.escape(_GRADING_TAIL),
    re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class GradingRequest:
    task: str
    prompt: str
    reference: str
    candidate: str


def grading_prompt(task: TaskType, prompt: str, reference: str, candidate: str) -> str:
    """The text of a grading request to the top tier: is the candidate as good as the reference?"""
    return (
        _GRADING_HEAD + f"Task type: {task.value}\n\n"
        f"<task>\n{prompt}\n</task>\n\n"
        f"<reference_answer>\n{reference}\n</reference_answer>\n\n"
        f"<candidate_answer>\n{candidate}\n</candidate_answer>\n\n" + _GRADING_TAIL
    )


def parse_grading_prompt(text: str) -> GradingRequest | None:
    """The parts of a text ``grading_prompt`` wrote, or None for any other text (the stand-in uses
    this to answer grading requests from recorded correctness)."""
    if not text.startswith(_GRADING_HEAD):
        return None
    m = _GRADING.fullmatch(text)
    if m is None:
        return None
    return GradingRequest(m["task"], m["prompt"], m["reference"], m["candidate"])


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
