"""Everything a worker process shares between jobs, built once at start-up (arq's ``ctx["routeq"]``)."""

from __future__ import annotations

import os
import random
import socket
import uuid
from dataclasses import dataclass, field

from anthropic import AsyncAnthropic
from arq.connections import ArqRedis

from jobs.documents.store import ContentCache
from jobs.keys import Keys
from jobs.settings import Settings
from worker.fleet.budget import Budgets
from worker.fleet.cache_warmer import CacheWarmer
from worker.fleet.store import Store
from worker.fleet.tier_gate import TierGate
from worker.observe.metrics import WorkerMetrics
from worker.policy.answer_checks.score import Coefficients
from worker.policy.router import Thresholds
from worker.policy.scorer import Scorer


def owner_id() -> str:
    """This process start's identity in the fleet (``host:pid:nonce``): its lease ids and line places carry
    it. ``host:pid`` alone repeats when a container restarts in its pod (same hostname, pid 1 again), and
    reaping the dead start would then free the new one's slots."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Runtime:
    settings: Settings
    redis: ArqRedis
    client: AsyncAnthropic
    store: Store
    gate: TierGate
    warmer: CacheWarmer
    budgets: Budgets
    scorer: Scorer | None
    thresholds: Thresholds | None
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    owner: str = field(default_factory=owner_id)
    rng: random.Random = field(default_factory=random.Random)
    documents: ContentCache = field(default_factory=ContentCache)
    # Calibrated cascade thresholds, task -> tier -> score (refreshed from Redis); empty: settings'.
    cascade_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    # Calibrated signal weights, task -> {family: coefficients}; a task absent uses the shipped ones.
    check_coefficients: dict[str, dict[str, Coefficients]] = field(default_factory=dict)

    @property
    def keys(self) -> Keys:
        return self.settings.keys
