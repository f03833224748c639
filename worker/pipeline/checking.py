"""Scoring a paid answer as this worker sees it: the task's answer checks with the calibrated weights,
and the tier's escalation threshold (calibrated, else the settings')."""

from __future__ import annotations

from jobs.contract import Job
from jobs.tiers import Tier
from worker.policy.answer_checks import CheckScore, score_answer
from worker.runtime import Runtime


def score(
    rt: Runtime, job: Job, documents: list[str], text: str | None, stop_reason: str | None
) -> CheckScore:
    return score_answer(
        job.task.value,
        job.prompt,
        text,
        documents=documents,
        output=job.output,
        stop_reason=stop_reason,
        enabled=list(rt.settings.checks.get(job.task, [])),
        coefficients=rt.check_coefficients.get(job.task.value),
    )


def threshold(rt: Runtime, job: Job, tier: Tier) -> float:
    """The score at or above which this tier's answer escalates: calibrated, else the settings'."""
    calibrated = rt.cascade_thresholds.get(job.task.value, {})
    return calibrated.get(tier.value, rt.settings.cascade_thresholds.get(tier, 1.0))
