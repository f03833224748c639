"""Calibrate a task's cascade from shadow labels: signal weights and the cheapest threshold. Pure.

A label is one shadowed cheap answer: its check signals and whether it agreed with the top tier's
answer (the reference, so the top tier's quality is 1 by construction). Labels are split by a stable
hash into a fitting part and a held-out part. On the fitting part the weights are fitted, and the
out-of-fold scores say the smallest share to escalate (the lowest cost) whose kept answers reach
``target`` agreement, an escalated answer counting as the top tier's; the threshold escalates that
share of the fitting labels under the fitted weights. The
held-out part only measures the chosen threshold's quality and escalation rate, so the reported quality
was not tuned on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.policy.answer_checks.fit import fit_logistic
from worker.policy.answer_checks.score import Coefficients, Signals, combine

MIN_LABELS = 60
HOLDOUT_SHARE = 0.3


@dataclass(frozen=True, slots=True)
class Label:
    key: str  # stable identity (e.g. the job id) deciding fit or held-out
    signals: Signals
    agree: bool


@dataclass(frozen=True, slots=True)
class CurvePoint:
    threshold: float
    escalated_share: float
    quality: float


@dataclass(frozen=True, slots=True)
class Calibration:
    task: str
    tier: str
    labels: int
    fallback: bool
    message: str
    threshold: float | None = None
    coefficients: Coefficients | None = None
    curve: list[CurvePoint] = field(default_factory=list)
    holdout_labels: int = 0
    holdout_quality: float | None = None
    holdout_escalated: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "tier": self.tier,
            "labels": self.labels,
            "fallback": self.fallback,
            "message": self.message,
            "threshold": self.threshold,
            "coefficients": self.coefficients.as_dict() if self.coefficients else None,
            "curve": [[p.threshold, p.escalated_share, p.quality] for p in self.curve],
            "holdout_labels": self.holdout_labels,
            "holdout_quality": self.holdout_quality,
            "holdout_escalated": self.holdout_escalated,
        }


def is_held_out(key: str, share: float = HOLDOUT_SHARE, seed: int | None = None) -> bool:
    """Whether a label is held out: a stable hash of its key (and of ``seed``, which draws another
    split of the same labels) below ``share``."""
    text = key if seed is None else f"{seed}:{key}"
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return h < share * 2**64


def quality_at(scores: Sequence[float], agree: Sequence[bool], threshold: float) -> tuple[float, float]:
    """(kept-answer quality, escalated share) when scores >= threshold go to the top tier."""
    n = len(scores)
    up = [s >= threshold for s in scores]
    quality = sum(1.0 if u else float(a) for u, a in zip(up, agree, strict=True)) / n
    return quality, sum(up) / n


def threshold_at_share(scores: Sequence[float], share: float) -> float:
    """The threshold that escalates ``share`` of ``scores`` (the highest ones); 1.01 escalates none."""
    ordered = sorted(scores, reverse=True)
    k = round(share * len(ordered))
    return ordered[k - 1] if k > 0 else 1.01


def curve(
    scores: Sequence[float], agree: Sequence[bool], points: int = 20, scale: Sequence[float] | None = None
) -> list[CurvePoint]:
    """From escalating nothing to escalating everything, at the score quantiles. With ``scale``, each
    point's threshold is the one escalating the same share of ``scale`` (the fitted model's scores)."""
    ordered = sorted(set(scores), reverse=True)
    picks = [ordered[round(i * (len(ordered) - 1) / points)] for i in range(points + 1)] if ordered else []
    out = []
    for t in [1.01, *sorted(set(picks), reverse=True), 0.0]:
        quality, share = quality_at(scores, agree, t)
        shown = t if scale is None or t in (1.01, 0.0) else threshold_at_share(scale, share)
        out.append(CurvePoint(round(shown, 4), round(share, 4), round(quality, 4)))
    return out


def cheapest_threshold(scores: Sequence[float], agree: Sequence[bool], target: float) -> float:
    """The highest threshold whose kept-answer quality reaches ``target`` (0 escalates everything)."""
    for t in [1.01, *sorted(set(scores), reverse=True)]:
        if quality_at(scores, agree, t)[0] >= target:
            return t
    return 0.0


def out_of_fold_scores(labels: Sequence[Label], names: Sequence[str], folds: int = 5) -> list[float]:
    """Each label scored by weights fitted without it: a threshold chosen on in-sample scores would
    promise more quality than new traffic gets."""
    out = [0.0] * len(labels)
    for f in range(folds):
        train = [x for i, x in enumerate(labels) if i % folds != f]
        fails = [not x.agree for x in train]
        if not train or all(fails) or not any(fails):
            whole = fit_logistic([x.signals for x in labels], [not x.agree for x in labels], names)
            return [combine(x.signals, whole) for x in labels]
        coefs = fit_logistic([x.signals for x in train], fails, names)
        for i in range(f, len(labels), folds):
            out[i] = combine(labels[i].signals, coefs)
    return out


def calibrate(
    task: str,
    tier: str,
    labels: Sequence[Label],
    names: Sequence[str],
    target: float = 0.95,
    min_labels: int = MIN_LABELS,
    split_seed: int | None = None,
) -> Calibration:
    fit = [x for x in labels if not is_held_out(x.key, seed=split_seed)]
    held = [x for x in labels if is_held_out(x.key, seed=split_seed)]
    fails = [not x.agree for x in fit]
    if len(labels) < min_labels or not fit or not held or all(fails) or not any(fails):
        why = (
            f"only {len(labels)} labels (< {min_labels})"
            if len(labels) < min_labels
            else "labels do not contain both agreements and disagreements"
        )
        return Calibration(task, tier, len(labels), True, f"{why}: using the shipped defaults")
    coefs = fit_logistic([x.signals for x in fit], fails, names)
    scores = out_of_fold_scores(fit, names)
    agree = [x.agree for x in fit]
    # The share to escalate comes from the out-of-fold curve; the threshold is where the model fitted on
    # all the fitting labels escalates that share. Fold models score on another scale than the final
    # one, so their threshold value applied to it missed the target by a point or more on average.
    share = quality_at(scores, agree, cheapest_threshold(scores, agree, target))[1]
    fitted = [combine(x.signals, coefs) for x in fit]
    # Stored with 4 decimals and applied by workers as stored, so measured as stored too; rounded down,
    # so answers sharing the chosen score (discrete signals make ties common) still escalate.
    threshold = math.floor(threshold_at_share(fitted, share) * 10_000) / 10_000
    held_scores = [combine(x.signals, coefs) for x in held]
    hq, hs = quality_at(held_scores, [x.agree for x in held], threshold)
    return Calibration(
        task,
        tier,
        len(labels),
        False,
        f"fitted on {len(fit)} labels, measured on {len(held)} held out",
        threshold=threshold,
        coefficients=coefs,
        curve=curve(scores, agree, scale=fitted),
        holdout_labels=len(held),
        holdout_quality=round(hq, 4),
        holdout_escalated=round(hs, 4),
    )
