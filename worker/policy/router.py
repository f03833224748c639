"""Router: the rule-based, explainable frame, and the learned score that moves a job within it.

Pure functions. The task type sets a base score and a frame (the tiers that task may use); complexity
signals move the score; the job's constraints bound the frame. When a learned score is available it
picks the tier inside the frame; otherwise the rule score does. Every decision carries a one-line reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from jobs.contract import Job, TaskType
from jobs.results import RouteRecord
from jobs.tiers import TIER_ORDER, Tier, clamp

# Base score and frame per task type: routine extraction-like work never needs Opus on its own merits,
# open reasoning never starts on Haiku. Signals and the learned score move within the frame.
TASK_BASE: dict[TaskType, tuple[float, Tier, Tier]] = {
    TaskType.classify: (0.10, Tier.haiku, Tier.sonnet),
    TaskType.extract: (0.20, Tier.haiku, Tier.sonnet),
    TaskType.translate: (0.25, Tier.haiku, Tier.sonnet),
    TaskType.summarize: (0.25, Tier.haiku, Tier.opus),
    TaskType.qa: (0.35, Tier.haiku, Tier.opus),
    TaskType.other: (0.40, Tier.haiku, Tier.opus),
    TaskType.synthesize: (0.55, Tier.haiku, Tier.opus),
    TaskType.code: (0.60, Tier.sonnet, Tier.opus),
    TaskType.reason: (0.70, Tier.sonnet, Tier.opus),
}

# Rule-score cut points: below SONNET_AT -> haiku, below OPUS_AT -> sonnet, else opus.
SONNET_AT = 0.40
OPUS_AT = 0.70

REASONING_CUES = re.compile(
    r"\b(prove|proof|derive|step[- ]by[- ]step|why|trade-?offs?|analy[sz]e|compare|contrast|evaluate|"
    r"design|optimi[sz]e|critique|justify|implications?|counter-?argument)\b",
    re.IGNORECASE,
)
STRUCTURE_CUES = re.compile(r"```|\$\$|\\frac|\b\d+\.\s|\bfunction\b|\bclass\b|[=<>]{2}|∑|∫")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Learned-score cut points: score < sonnet -> haiku; score >= opus -> opus."""

    sonnet: float
    opus: float


def _schema_size(schema: Any) -> int:
    if isinstance(schema, dict):
        return 1 + sum(_schema_size(v) for v in schema.values())
    if isinstance(schema, list):
        return sum(_schema_size(v) for v in schema)
    return 0


def signals(job: Job) -> dict[str, Any]:
    text = job.prompt + "\n" + (job.system or "")
    return {
        "est_tokens": job.estimated_input_tokens(),
        "documents": len(job.documents),
        "reasoning_cues": len(REASONING_CUES.findall(text)),
        "structure_cues": len(STRUCTURE_CUES.findall(text)),
        "schema_size": _schema_size(job.output.json_schema) if job.output.json_schema else 0,
        "max_output_tokens": job.max_output_tokens,
    }


def rule_score(task: TaskType, sig: dict[str, Any]) -> tuple[float, list[str]]:
    score, _, _ = TASK_BASE[task]
    why = [f"{task.value} base {score:.2f}"]

    def bump(amount: float, what: str) -> None:
        nonlocal score
        score += amount
        why.append(f"{what} {amount:+.2f}")

    if sig["est_tokens"] > 50_000:
        bump(0.15, f"~{sig['est_tokens']} tokens")
    elif sig["est_tokens"] > 8_000:
        bump(0.08, f"~{sig['est_tokens']} tokens")
    if sig["documents"] > 3:
        bump(0.08, f"{sig['documents']} documents")
    if sig["reasoning_cues"]:
        bump(min(0.2, 0.06 * sig["reasoning_cues"]), f"{sig['reasoning_cues']} reasoning cues")
    if sig["structure_cues"] > 2:
        bump(0.05, "structured/math/code content")
    if sig["schema_size"] > 40:
        bump(0.10, "large JSON schema")
    elif sig["schema_size"] > 12:
        bump(0.05, "nested JSON schema")
    if sig["max_output_tokens"] > 4000:
        bump(0.08, "long output")
    return max(0.0, min(1.0, score)), why


def tier_for(score: float, sonnet_at: float, opus_at: float) -> Tier:
    if score >= opus_at:
        return Tier.opus
    if score >= sonnet_at:
        return Tier.sonnet
    return Tier.haiku


def decide(job: Job, learned_score: float | None = None, thresholds: Thresholds | None = None) -> RouteRecord:
    sig = signals(job)
    score, why = rule_score(job.task, sig)
    _, frame_lo, frame_hi = TASK_BASE[job.task]
    c = job.constraints
    if c.tier is not None:
        return RouteRecord(
            tier=c.tier,
            base_tier=c.tier,
            score=round(score, 4),
            learned_score=learned_score,
            reason=f"pinned to {c.tier.value} by the job",
            signals=sig,
            bounds=(c.tier, c.tier),
        )
    # The task frame intersected with the job's constraints; when they do not overlap the constraints
    # win, since the user knows their job.
    lo = max(frame_lo, c.low, key=lambda t: t.rank)
    hi = min(frame_hi, c.high, key=lambda t: t.rank)
    if lo.rank > hi.rank:
        lo, hi = c.low, c.high
    base = tier_for(score, SONNET_AT, OPUS_AT)
    if learned_score is not None and thresholds is not None:
        wanted = tier_for(learned_score, thresholds.sonnet, thresholds.opus)
        source = f"learned {learned_score:.2f} -> {wanted.value}"
        # A strong rule signal (long context, heavy reasoning) keeps a floor one tier below its own pick.
        floor = TIER_ORDER[max(0, base.rank - 1)]
        if wanted.rank < floor.rank:
            wanted, source = floor, source + f", raised to {floor.value} by rules"
    else:
        wanted, source = base, f"rule score {score:.2f} -> {base.value}"
    tier = clamp(wanted, lo, hi)
    bounded = "" if tier == wanted else f", bounded to {lo.value}..{hi.value}"
    return RouteRecord(
        tier=tier,
        base_tier=base,
        score=round(score, 4),
        learned_score=learned_score,
        reason=f"{source}{bounded} ({'; '.join(why)})",
        signals=sig,
        bounds=(lo, hi),
    )
