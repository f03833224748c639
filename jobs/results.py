"""What a job leaves behind: usage, itemised cost, route record, attempts, outcome.

Written by the worker, read by the CLI and by users. Money is integer pico-USD (1e-12 USD) so sums are
exact: the cheapest rate in the catalog (0.005 USD per million tokens after a batch discount) is still a
whole number of pico-USD per token. One signed 64-bit Redis counter holds up to ~9.2 million USD.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.tiers import Tier

PICO = 10**12


def pico_to_usd(pico: int) -> Decimal:
    return Decimal(pico) / PICO


def usd_float(pico: int) -> float:
    """For display and JSON; exact values stay in the ``*_pusd`` integers."""
    return float(round(pico_to_usd(pico), 12))


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_tokens: int = 0  # uncached input, as the API reports it
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def prompt_tokens(self) -> int:
        """All input the model read: uncached + written + read from cache."""
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in Usage.model_fields})


class Cost(BaseModel):
    """One call's (or a job's summed) cost, itemised, in pico-USD."""

    model_config = ConfigDict(extra="forbid")
    input_pusd: int = 0
    output_pusd: int = 0
    cache_write_5m_pusd: int = 0
    cache_write_1h_pusd: int = 0
    cache_read_pusd: int = 0

    @property
    def total_pusd(self) -> int:
        return (
            self.input_pusd
            + self.output_pusd
            + self.cache_write_5m_pusd
            + self.cache_write_1h_pusd
            + self.cache_read_pusd
        )

    def __add__(self, other: Cost) -> Cost:
        return Cost(**{k: getattr(self, k) + getattr(other, k) for k in Cost.model_fields})


class RouteRecord(BaseModel):
    """Why the job went where it went. ``score`` is the rule score; ``learned_score`` the scorer's."""

    model_config = ConfigDict(extra="forbid")
    tier: Tier
    base_tier: Tier
    score: float
    learned_score: float | None = None
    reason: str
    signals: dict[str, Any] = Field(default_factory=dict)
    bounds: tuple[Tier, Tier] = (Tier.haiku, Tier.opus)


AttemptStatus = Literal["ok", "error", "check_failed", "shadow"]


class Attempt(BaseModel):
    """One model call (or a failed try at one). Paid attempts carry usage and cost."""

    model_config = ConfigDict(extra="forbid")
    n: int
    tier: Tier
    model: str
    status: AttemptStatus
    latency_ms: int = 0
    wait_ms: int = 0
    usage: Usage = Field(default_factory=Usage)
    cost: Cost = Field(default_factory=Cost)
    stop_reason: str | None = None
    error_type: str | None = None
    error: str | None = None
    request_id: str | None = None
    started_at: float = 0.0
    service_tier: str | None = None  # usage.service_tier of a paid answer: "standard" | "batch" | ...


JobStatus = Literal["done", "failed"]


class JobResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str
    batch: str
    tenant: str
    task: str
    status: JobStatus
    tier: Tier | None = None
    model: str | None = None
    output: str | None = None
    stop_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost: Cost = Field(default_factory=Cost)
    baseline_cost_pusd: int = 0  # same tokens on the top tier, no caching
    uncached_cost_pusd: int = 0  # same tokens on the tiers actually used, no caching
    standard_cost_pusd: int = 0  # same calls (caching included) at standard rates: no batch discount
    service_tier: str | None = None  # of the answer the job ended with
    route: RouteRecord | None = None
    cache: dict[str, Any] = Field(default_factory=dict)
    attempts: list[Attempt] = Field(default_factory=list)
    latency_ms: int = 0
    error: str | None = None
    error_type: str | None = None
    finished_at: float = 0.0

    def public(self) -> dict[str, Any]:
        """The JSONL line `routeq results` writes."""
        d = self.model_dump(mode="json")
        d["cost_usd"] = usd_float(self.cost.total_pusd)
        d["baseline_cost_usd"] = usd_float(self.baseline_cost_pusd)
        d["cost_pusd"] = self.cost.total_pusd
        return d


# Aggregate hash fields (batch, tenant): integers only, updated with HINCRBY exactly once per job.
AGG_FIELDS_PER_TIER = (
    "jobs",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "cost_pusd",
    "uncached_cost_pusd",
)


def aggregate_increments(r: JobResult) -> dict[str, int]:
    """The HINCRBY deltas one final result adds to its batch and tenant aggregates."""
    inc: dict[str, int] = {
        "jobs": 1,
        "done": int(r.status == "done"),
        "failed": int(r.status == "failed"),
        "cost_pusd": r.cost.total_pusd,
        "baseline_pusd": r.baseline_cost_pusd,
        "uncached_pusd": r.uncached_cost_pusd,
        # Results written before this field existed cost what they cost at standard rates.
        "standard_pusd": r.standard_cost_pusd or r.cost.total_pusd,
        "attempts": len(r.attempts),
    }
    # Per-tier rows are attributed by each attempt's tier, so escalations bill where they ran.
    for a in r.attempts:
        t = a.tier.value
        for f, v in (
            ("input_tokens", a.usage.input_tokens),
            ("output_tokens", a.usage.output_tokens),
            ("cache_write_5m_tokens", a.usage.cache_write_5m_tokens),
            ("cache_write_1h_tokens", a.usage.cache_write_1h_tokens),
            ("cache_read_tokens", a.usage.cache_read_tokens),
            ("cost_pusd", a.cost.total_pusd),
            ("calls", int(a.status != "error")),
        ):
            inc[f"tier:{t}:{f}"] = inc.get(f"tier:{t}:{f}", 0) + v
    if r.tier is not None:
        inc[f"tier:{r.tier.value}:jobs"] = inc.get(f"tier:{r.tier.value}:jobs", 0) + 1
    return {k: v for k, v in inc.items() if v}
