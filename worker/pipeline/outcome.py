"""A job's final result from its attempts: summed usage and cost, the baselines, who and where it was."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from jobs.contract import Job
from jobs.results import Attempt, Cost, JobResult, JobStatus, RouteRecord, Usage
from jobs.settings import Settings
from jobs.tiers import TOP_TIER
from worker.policy import pricing


def totals(attempts: list[Attempt]) -> tuple[Usage, Cost]:
    usage, cost = Usage(), Cost()
    for a in attempts:
        usage, cost = usage + a.usage, cost + a.cost
    return usage, cost


def build_result(
    settings: Settings,
    job: Job,
    attempts: list[Attempt],
    status: JobStatus,
    *,
    route: RouteRecord | None,
    cache_info: dict[str, Any],
    today: dt.date,
    **fields: Any,
) -> JobResult:
    """Every attempt is billed: an escalated job's cheap answer is part of its cost and its baselines."""
    usage, cost = totals(attempts)
    baseline = pricing.baseline_cost(settings.spec_for(TOP_TIER), usage, today)
    uncached = sum(pricing.uncached_cost(settings.spec_for(a.tier), a.usage, today) for a in attempts)
    # the same calls at standard rates: the gap to ``cost`` is the Message Batches discount
    standard = sum(pricing.price_call(settings.spec_for(a.tier), a.usage, today).total_pusd for a in attempts)
    return JobResult(
        job_id=job.job_id,
        id=job.id,
        source=job.source or job.document_source,
        labels=job.tags.labels,
        batch=job.tags.batch or "default",
        tenant=job.tags.tenant,
        task=job.task.value,
        status=status,
        usage=usage,
        cost=cost,
        baseline_cost_pusd=baseline,
        uncached_cost_pusd=uncached,
        standard_cost_pusd=standard,
        service_tier=next((a.service_tier for a in reversed(attempts) if a.service_tier), None),
        route=route,
        cache=cache_info,
        attempts=attempts,
        finished_at=time.time(),
        latency_ms=sum(a.latency_ms for a in attempts),
        **fields,
    )


def dead_letter(job: Job, kind: str, message: str, attempts: int) -> dict[str, Any]:
    """What ``routeq dead`` shows and ``routeq retry`` re-runs: the cause and the job as enqueued."""
    return {
        "error_type": kind,
        "error": message,
        "attempts": attempts,
        "at": time.time(),
        "job": job.model_dump(mode="json", by_alias=True, exclude={"trace_context"}),
    }
