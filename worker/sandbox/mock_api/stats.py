"""Counters behind ``GET /_stats``. Tokens count only for billed (200) responses; ``requests`` counts all."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ModelStats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # Integral of in_flight over time: its rise over a window / the window = mean requests held open,
    # which tells a benchmark whether a tier's slots sat idle or its calls were slow.
    in_flight_s: float = 0.0
    _since: float = field(default_factory=time.monotonic)

    def _tick(self) -> None:
        now = time.monotonic()
        self.in_flight_s += self.in_flight * (now - self._since)
        self._since = now

    def enter(self) -> None:
        self._tick()
        self.requests += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def leave(self) -> None:
        self._tick()
        self.in_flight -= 1

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "in_flight_s": round(self.in_flight_s + self.in_flight * (time.monotonic() - self._since), 4),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "errors": dict(self.errors),
        }


@dataclass(slots=True)
class BatchStats:
    """Message Batches totals; duplicate_requests counts billed requests equal to an earlier billed one."""

    created: int = 0
    requests: int = 0
    succeeded: int = 0
    errored: int = 0
    expired: int = 0
    canceled: int = 0
    duplicate_requests: int = 0
    # HTTP calls to the batch endpoints (create, retrieve, list, cancel, delete, results), and the most
    # seen in any 60 s: what the API's batch RPM counts.
    calls: int = 0
    max_calls_60s: int = 0
    _recent: deque[float] = field(default_factory=deque)

    def call(self) -> None:
        now = time.monotonic()
        self.calls += 1
        self._recent.append(now)
        while self._recent[0] <= now - 60.0:
            self._recent.popleft()
        self.max_calls_60s = max(self.max_calls_60s, len(self._recent))

    def to_json(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "max_calls_60s": self.max_calls_60s,
            "created": self.created,
            "requests": self.requests,
            "succeeded": self.succeeded,
            "errored": self.errored,
            "expired": self.expired,
            "canceled": self.canceled,
            "duplicate_requests": self.duplicate_requests,
        }


@dataclass(slots=True)
class Stats:
    models: dict[str, ModelStats] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    jobs: Counter[str] = field(default_factory=Counter)
    count_tokens: int = 0
    # Document blocks of billed requests, by source media type.
    documents: Counter[str] = field(default_factory=Counter)
    batches: BatchStats = field(default_factory=BatchStats)
    # Requests answered inside Message Batches, per model, kept apart from realtime ones.
    batch_models: dict[str, ModelStats] = field(default_factory=dict)

    def model(self, name: str) -> ModelStats:
        got = self.models.get(name)
        if got is None:
            got = self.models[name] = ModelStats()
        return got

    def batch_model(self, name: str) -> ModelStats:
        got = self.batch_models.get(name)
        if got is None:
            got = self.batch_models[name] = ModelStats()
        return got

    def to_json(self) -> dict[str, Any]:
        models = {k: v.to_json() for k, v in self.models.items()}
        for name, b in self.batch_models.items():
            models.setdefault(name, ModelStats().to_json())["batch"] = b.to_json()
        return {
            "models": models,
            "batches": self.batches.to_json(),
            "faults": dict(self.faults),
            "jobs": dict(self.jobs),
            "count_tokens": self.count_tokens,
            "documents": {"application/pdf": 0, "text/plain": 0, **self.documents},
        }
