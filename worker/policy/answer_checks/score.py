"""The result of an answer check and the one place where signal weights combine into a score."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

# A signal is a named, explainable number; ``reason`` says in words why it fired (empty when it did not).
Signals = dict[str, float]


@dataclass(frozen=True, slots=True)
class CheckScore:
    """How likely the answer falls short, in [0, 1], and the reasons that made it so."""

    score: float
    reasons: list[str] = field(default_factory=list)
    failed: tuple[str, ...] = ()  # hard checks that failed (then score is 1)
    top_signal: str | None = None  # the signal that added most to the score, or "check:<name>"

    def as_dict(self) -> dict[str, Any]:
        return {"score": round(self.score, 4), "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class Coefficients:
    """A logistic model over named signals: score = sigmoid(intercept + sum(weight * signal))."""

    intercept: float
    weights: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"intercept": self.intercept, "weights": dict(self.weights)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Coefficients:
        weights = data.get("weights")
        if not isinstance(weights, dict):
            raise ValueError("coefficients need a 'weights' object")
        return cls(float(data.get("intercept", 0.0)), {str(k): float(v) for k, v in weights.items()})


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def strongest(signals: Signals, coefs: Coefficients) -> str | None:
    """The signal whose weighted value adds most to the score (None when none adds anything)."""
    best, top = 0.0, None
    for name, value in signals.items():
        part = coefs.weights.get(name, 0.0) * value
        if part > best:
            best, top = part, name
    return top


def combine(signals: Signals, coefs: Coefficients) -> float:
    z = coefs.intercept
    for name, value in signals.items():
        z += coefs.weights.get(name, 0.0) * value
    return sigmoid(z)


@cache
def shipped_coefficients() -> dict[str, Coefficients]:
    """Per task family, the default weights shipped with the package (fitted on the dev data)."""
    text = resources.files("worker.policy.answer_checks").joinpath("data/coefficients.json").read_text()
    raw = json.loads(text)
    return {family: Coefficients.from_dict(body) for family, body in raw["families"].items()}
