"""What a job leaves behind: usage, itemised cost, route record, attempts, outcome.

Written by the worker, read by the CLI and by users. Money is integer pico-USD (1e-12 USD) so sums are
exact: the cheapest rate in the catalog (0.005 USD per million tokens after a batch discount) is still a
whole number of pico-USD per token. One signed 64-bit Redis counter holds up to ~9.2 million USD.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    strategy: Literal["route", "cascade"] = "route"


# "escalated": a paid answer a cascade discarded because its check score reached the tier's threshold.
AttemptStatus = Literal["ok", "error", "check_failed", "escalated", "shadow"]


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
    check_score: float | None = None  # answer check score in [0, 1]; 1 = a hard check failed
    check_reasons: list[str] = Field(default_factory=list)
    check_signal: str | None = None  # the signal that weighed most in the score (why it escalated)
    service_tier: str | None = None  # usage.service_tier of a paid answer: "standard" | "batch" | ...


# "canceled": the user canceled the job's batch (``routeq cancel``) before it was answered.
JobStatus = Literal["done", "failed", "canceled"]


class JobResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str  # routeq's internal id
    id: str | None = None  # the caller's id for the job, if it gave one
    # where the job came from: a folder document's relative path, or the file a JSONL line's document
    # was read from (relative to the JSONL file)
    source: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    batch: str
    tenant: str
    task: str
    status: JobStatus
    tier: Tier | None = None
    model: str | None = None
    output: str | None = None  # the answer's text
    output_type: Literal["text", "json"] = "text"  # "json": parsed_output holds the answer's JSON value
    parsed_output: Any = None
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

    @model_validator(mode="before")
    @classmethod
    def _canceled_of_old(cls, data: Any) -> Any:
        # Records from before the status existed ended a canceled job as failed with this error type.
        if isinstance(data, dict) and data.get("status") == "failed" and data.get("error_type") == "canceled":
            return {**data, "status": "canceled"}
        return data

    def public(self) -> dict[str, Any]:
        """The JSONL line `routeq results` writes. A JSON answer's ``output`` is the parsed value; its
        text stays in ``output_text``."""
        d = self.model_dump(mode="json")
        parsed = d.pop("parsed_output")
        if self.output_type == "json":
            d["output_text"] = d["output"]
            d["output"] = parsed
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


# Fields starting with this mark go to the batch aggregate only (record.lua skips the tenant's): a
# per-minute series would grow a tenant hash, which never expires, without bound.
BATCH_ONLY = "@"
# Attempt error kinds (worker/policy/faults.py) counted per tier: the API's 429 and 529 answers.
HTTP_FAULTS = {"rate_limit": "http_429", "overloaded": "http_529"}


def minute_of(ts: float) -> int:
    """The per-minute series bucket of a wall-clock time (minutes since the epoch)."""
    return int(ts // 60)


def series_field(minute: int, tier: str, what: str) -> str:
    """``@m:<minute>:<tier>:<cost|jobs>``: spend and finished jobs per tier and minute of a batch."""
    return f"{BATCH_ONLY}m:{minute}:{tier}:{what}"


def escalations(r: JobResult) -> list[tuple[str, str]]:
    """(from tier, reason) for each move up a tier: the error kind of the last attempt before it."""
    out: list[tuple[str, str]] = []
    for prev, cur in zip(r.attempts, r.attempts[1:], strict=False):
        if cur.tier.rank > prev.tier.rank:
            out.append((prev.tier.value, prev.error_type or prev.status))
    return out


def aggregate_increments(r: JobResult) -> dict[str, int]:
    """The HINCRBY deltas one final result adds to its batch and tenant aggregates.

    Besides the report's sums: 429/529 answers per tier, escalations per tier and reason, and the
    batch's per-minute spend and jobs per tier (usually two fields: one tier, one minute)."""
    inc: dict[str, int] = {
        "jobs": 1,
        "done": int(r.status == "done"),
        "failed": int(r.status == "failed"),
        "canceled": int(r.status == "canceled"),
        "cost_pusd": r.cost.total_pusd,
        "baseline_pusd": r.baseline_cost_pusd,
        "uncached_pusd": r.uncached_cost_pusd,
        # Results written before this field existed cost what they cost at standard rates.
        "standard_pusd": r.standard_cost_pusd or r.cost.total_pusd,
        "attempts": len(r.attempts),
    }
    ups = [a for a in r.attempts if a.status in ("escalated", "check_failed")]
    if ups:
        inc["escalated"] = 1
        for a in ups:
            why = f"escalated:why:{a.check_signal or a.error_type or 'unknown'}"
            inc[why] = inc.get(why, 0) + 1
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
            (HTTP_FAULTS.get(a.error_type or "", ""), 1),
        ):
            if f:
                inc[f"tier:{t}:{f}"] = inc.get(f"tier:{t}:{f}", 0) + v
    if r.tier is not None:
        inc[f"tier:{r.tier.value}:jobs"] = inc.get(f"tier:{r.tier.value}:jobs", 0) + 1
    for tier, reason in escalations(r):
        inc[f"esc:{tier}:{reason}"] = inc.get(f"esc:{tier}:{reason}", 0) + 1
    minute = minute_of(r.finished_at)
    for a in r.attempts:
        field = series_field(minute, a.tier.value, "cost")
        inc[field] = inc.get(field, 0) + a.cost.total_pusd
    if r.tier is not None:
        inc[series_field(minute, r.tier.value, "jobs")] = 1
    return {k: v for k, v in inc.items() if v}
