"""Hand a routed, planned request of a batch-mode job to its model's gathering set (instead of calling).

One request is identified by its job and attempt number (``custom_id``): however often arq delivers the
job, that request is gathered once (``batch_gather.lua``: HSETNX), and an API batch never holds it
twice. Batch requests use the 1-hour cache TTL: a batch may take longer than five minutes to reach the
requests that share a prefix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from jobs import telemetry
from jobs.results import RouteRecord
from jobs.schedule import deadline_epoch
from jobs.tiers import Tier
from worker.batches.decide import Route, choose_route
from worker.fleet.budget import BudgetRefusal, token_for
from worker.fleet.redis_scripts import Scripts
from worker.policy import cache_layout, pricing

if TYPE_CHECKING:
    from worker.pipeline.run import JobRun
    from worker.runtime import Runtime


class BatchItem(BaseModel):
    """What a worker needs to submit a request and, later, to finish its job from the result."""

    model_config = ConfigDict(extra="forbid")
    custom_id: str
    job: dict[str, Any]  # the job's wire form
    tier: Tier
    model: str
    n: int  # the attempt number this request is
    params: dict[str, Any]
    ttl: str | None
    route: RouteRecord
    deadline_at: float | None = None
    trace: dict[str, str] = {}  # W3C context of the attempt span that gathered it (empty: tracing off)
    # The budget hold (worker/fleet/budget.py Reservation fields) settled or released when the result is in.
    reservation: dict[str, Any] | None = None

    @property
    def job_id(self) -> str:
        """routeq's id of the job (``Job.job_id`` of the wire form, without rebuilding the job)."""
        return str(self.job.get("internal_id") or self.job["id"])


def custom_id(job_id: str, n: int) -> str:
    """``^[a-zA-Z0-9_-]{1,64}$`` whatever the job id (which may hold '.' and be 128 long)."""
    return "rq-" + hashlib.blake2b(f"{job_id}:{n}".encode(), digest_size=16).hexdigest()


def deadline_of(run: JobRun) -> float | None:
    text = run.job.constraints.deadline or run.settings.default_deadline
    return None if text is None else deadline_epoch(text, run.enqueued_at)


def route_now(run: JobRun, deadline_at: float | None) -> Route:
    """Batch or realtime for this job right now (its mode, its deadline, the expected batch latency)."""
    s = run.settings
    return choose_route(
        run.job.constraints.mode or s.default_mode,
        deadline_at,
        time.time(),
        expected_latency_s=s.batch_expected_latency_s,
        margin_s=s.batch_deadline_margin_s,
    )


async def gather(
    run: JobRun, route: RouteRecord, tier: Tier, deadline_at: float | None
) -> bool | BudgetRefusal:
    """Plan the request at ``tier``, hold its worst-case cost (batch rates) where a budget caps it, and
    add it; False when it was gathered before, the refusal when a cap leaves no room."""
    s = run.settings
    model, spec = s.model_for(tier), s.spec_for(tier)
    ttl: cache_layout.Ttl | None = "1h" if s.caching else None
    plan = cache_layout.build_request(
        run.job,
        model,
        spec,
        ttl=ttl,
        caching=s.caching,
        unshared=await run.planner.unshared_documents(),
        contents=await run.planner.document_contents(),
    )
    n = len(run.attempts) + 1
    amount = pricing.max_cost(
        spec, plan.estimated_input_tokens, run.job.max_output_tokens, run.today, batch=True
    )
    token = token_for(run.job_id, n)
    try:
        held = await run.rt.budgets.reserve_if_capped(run.job.tags.tenant, run.batch, amount, token)
    except ValueError:
        # This attempt's token was closed by a run that died before saving the attempt: a new hold.
        held = await run.rt.budgets.reserve_if_capped(run.job.tags.tenant, run.batch, amount, token + ":b")
    if isinstance(held, BudgetRefusal):
        return held
    item = BatchItem(
        custom_id=custom_id(run.job_id, n),
        job=run.wire if isinstance(run.wire, dict) else run.job.to_wire(),
        tier=tier,
        model=model,
        n=n,
        params=plan.params,
        ttl=ttl if plan.prefix_hashes else None,
        route=route,
        deadline_at=deadline_at,
        trace=telemetry.inject_context() if telemetry.tracing_enabled() else {},
        reservation=dataclasses.asdict(held),
    )
    return await add(run.rt, item, run.batch, plan.warm_hash)


async def add(rt: Runtime, item: BatchItem, batch: str, prefix_hash: str | None = None) -> bool:
    k = rt.keys
    script = Scripts(rt.redis)["batch_gather"]
    keys = [k.batch_items, k.batch_gather(item.model), k.batch_gather_bytes, k.batch_in_api(batch)]
    if prefix_hash:
        keys.append(k.batch_prefix_seen(item.model, prefix_hash))
    args = [item.custom_id, item.model_dump_json(), item.model, item.job_id]
    return bool(await script(keys=keys, args=args))
