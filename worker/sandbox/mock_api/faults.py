"""Fault injection: which failure (if any) a request gets, drawn from a seeded RNG.

Spec string: comma-separated ``[MODELWORD:]KIND=P`` items, e.g.
``429=0.03,529=0.03,timeout=0.01,haiku:529=0.5,slow=0.05``. A model-scoped item applies to models whose
id contains MODELWORD and replaces the default probability of that kind for them. Kinds are tried in a
fixed order against one uniform draw, so a request gets at most one fault; ``slow`` is separate (an
independent draw that adds ``slow_ms`` to the time to first token of an otherwise normal answer).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Order matters only when probabilities add up past 1: earlier kinds win.
FAULT_KINDS: tuple[str, ...] = (
    "429",
    "429noretry",
    "spend",
    "529",
    "500",
    "503",
    "504",
    "timeout",
    "reset",
    # Non-retryable client errors (appended last so existing specs and seeds draw the same faults).
    "400",
    "401",
    "403",
)
SLOW = "slow"
# Per-request outcomes inside a Message Batch (never drawn for realtime requests).
BATCH_KINDS: tuple[str, ...] = ("batch_expired", "batch_errored")
_ALL_KINDS = frozenset((*FAULT_KINDS, SLOW, *BATCH_KINDS))
DEFAULT_SLOW_MS = 2000.0


def _check(kind: str, p: float) -> None:
    if kind not in _ALL_KINDS:
        raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(sorted(_ALL_KINDS))})")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"fault probability for {kind} must be within [0, 1], got {p}")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    default: Mapping[str, float] = field(default_factory=dict)
    per_model: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    slow_ms: float = DEFAULT_SLOW_MS

    @classmethod
    def parse(cls, spec: str, slow_ms: float = DEFAULT_SLOW_MS) -> FaultPlan:
        default: dict[str, float] = {}
        per_model: dict[str, dict[str, float]] = {}
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            lhs, sep, rhs = item.partition("=")
            if not sep:
                raise ValueError(f"fault item {item!r} is not KIND=P")
            word, colon, kind = lhs.strip().rpartition(":")
            p = float(rhs)
            _check(kind, p)
            (per_model.setdefault(word, {}) if colon else default)[kind] = p
        return cls(default, per_model, slow_ms)

    @classmethod
    def from_json(cls, raw: Any) -> FaultPlan:
        """Accept a spec string, ``{"spec": "...", "slow_ms": N}`` or the shape ``to_json`` returns."""
        if isinstance(raw, str):
            return cls.parse(raw)
        if not isinstance(raw, dict):
            raise ValueError("faults must be a spec string or an object")
        slow_ms = float(raw.get("slow_ms", DEFAULT_SLOW_MS))
        if "spec" in raw:
            return cls.parse(str(raw["spec"]), slow_ms)
        default = {str(k): float(v) for k, v in (raw.get("default") or {}).items()}
        models = raw.get("models") or {}
        per_model = {str(w): {str(k): float(v) for k, v in kinds.items()} for w, kinds in models.items()}
        for kinds in (default, *per_model.values()):
            for k, p in kinds.items():
                _check(k, p)
        return cls(default, per_model, slow_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "default": dict(self.default),
            "models": {w: dict(k) for w, k in self.per_model.items()},
            "slow_ms": self.slow_ms,
        }

    def for_model(self, model: str) -> dict[str, float]:
        probs = dict(self.default)
        for word, kinds in self.per_model.items():
            if word in model:
                probs.update(kinds)
        return probs


@dataclass(frozen=True, slots=True)
class _Resolved:
    cumulative: tuple[tuple[float, str], ...]
    slow_p: float


class FaultInjector:
    """Draws faults for requests; one instance per server, so a seed reproduces a whole run."""

    def __init__(self, plan: FaultPlan, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._seed = seed
        self.set_plan(plan)

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    def set_plan(self, plan: FaultPlan, seed: int | None = None) -> None:
        self._plan = plan
        self._by_model: dict[str, _Resolved] = {}
        if seed is not None:
            self._seed = seed
            self._rng.seed(seed)

    def _resolve(self, model: str) -> _Resolved:
        got = self._by_model.get(model)
        if got is None:
            probs = self._plan.for_model(model)
            acc, cum = 0.0, []
            for kind in FAULT_KINDS:
                p = probs.get(kind, 0.0)
                if p > 0:
                    acc += p
                    cum.append((acc, kind))
            got = _Resolved(tuple(cum), probs.get(SLOW, 0.0))
            self._by_model[model] = got
        return got

    def pick(self, model: str) -> str | None:
        res = self._resolve(model)
        if not res.cumulative:
            return None
        r = self._rng.random()
        for bound, kind in res.cumulative:
            if r < bound:
                return kind
        return None

    def pick_batch(self, model: str) -> str | None:
        probs = self._plan.for_model(model)
        acc, r = 0.0, None
        for kind in BATCH_KINDS:
            p = probs.get(kind, 0.0)
            if p <= 0:
                continue
            if r is None:
                r = self._rng.random()
            acc += p
            if r < acc:
                return kind
        return None

    def extra_latency_ms(self, model: str) -> float:
        res = self._resolve(model)
        if res.slow_p > 0 and self._rng.random() < res.slow_p:
            return self._plan.slow_ms
        return 0.0
