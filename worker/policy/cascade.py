"""Keep an answer or escalate it: the cascade's decision after each paid answer. Pure.

Under ``route`` only a failed hard check escalates. Under ``cascade`` an answer whose check
score is at or above its tier's threshold escalates too. Either way escalation stops at the job's
ceiling and after ``max_escalations``; a hard failure that cannot escalate fails the job, a doubtful
soft score that cannot escalate keeps the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jobs.tiers import Tier
from worker.policy.answer_checks import CheckScore

Action = Literal["keep", "escalate", "fail"]


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str


def decide(
    *,
    strategy: Literal["route", "cascade"],
    check: CheckScore,
    tier: Tier,
    ceiling: Tier,
    threshold: float,
    escalations: int,
    max_escalations: int,
    escalation: bool = True,
) -> Decision:
    can_go_up = escalation and tier.rank < ceiling.rank and escalations < max_escalations
    if check.failed:
        names = ", ".join(check.failed)
        if can_go_up:
            return Decision("escalate", f"failed checks: {names}")
        return Decision("fail", f"answer failed checks: {names}")
    if strategy == "cascade" and check.score >= threshold:
        why = f"check score {check.score:.3f} >= {threshold:.3f} on {tier.value}"
        if can_go_up:
            return Decision("escalate", why)
        return Decision("keep", f"{why}, but {tier.value} is the highest tier allowed")
    return Decision("keep", f"check score {check.score:.3f}")
