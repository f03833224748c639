"""Poll open submissions and ingest their results: idempotent, resumable, by any worker.

Each result goes through the record path realtime answers take (``Store.save_attempt_into`` keyed by
attempt number, then ``Store.record`` gated on the batch's done set), so a result ingested twice (two
workers, or one that died half way through a batch) is saved and recorded once. A request leaves the
items hash only after its job has moved on, and a result whose job has moved past it is skipped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from typing import Any

import anthropic
import orjson

from jobs.connections import aw
from jobs.contract import Job
from jobs.results import Attempt, Cost, Usage
from worker.batches import outcome, rate
from worker.batches.decide import Route
from worker.batches.gather import BatchItem, gather
from worker.batches.recover import recover
from worker.batches.submit import lease_ms
from worker.fleet.budget import Reservation
from worker.fleet.redis_scripts import Scripts, WriteBatch
from worker.observe import tracing
from worker.pipeline.call import usage_from
from worker.pipeline.run import JobRun, Parked
from worker.policy import pricing
from worker.policy.checks import check_answer
from worker.runtime import Runtime

log = logging.getLogger("routeq.batches")
LOCK_MS = 120_000


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def poll_open(rt: Runtime, owner: str) -> int:
    """One pass over open submissions; returns how many are still open."""
    k = rt.keys
    subs = [_s(x) for x in await aw(rt.redis.zrange(k.api_batches_open, 0, -1))]
    for sub in subs:
        if not await rt.redis.set(k.api_batch_lock(sub), owner, nx=True, px=LOCK_MS):
            continue
        try:
            await _poll_one(rt, sub)
        except anthropic.APIError as e:
            log.warning("submission %s: %s; retried next poll", sub, e)
        finally:
            await Scripts(rt.redis)["batch_release"](keys=[k.api_batch_lock(sub)], args=[owner])
    return len(subs)


async def _poll_one(rt: Runtime, sub: str) -> None:
    k = rt.keys
    h = {_s(a): _s(b) for a, b in (await aw(rt.redis.hgetall(k.api_batch(sub)))).items()}
    if not h:
        await rt.redis.zrem(k.api_batches_open, sub)
        return
    if "batch_id" not in h:
        (sec, _usec) = await rt.redis.time()
        if sec * 1000 - int(h["created_ms"]) > lease_ms(rt):
            await recover(rt, sub, h)
        return
    if h.get("api_status") != "ended":  # once seen ended, a resumed ingestion needs no retrieve
        if await rate.take(rt) > 0:
            return  # no room in the batch RPM: next pass
        try:
            b = await rt.client.messages.batches.retrieve(h["batch_id"])
        except anthropic.NotFoundError:
            return  # short 404s right after create have been seen: ask again next poll
        counts = b.request_counts
        tally = (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired)
        await rt.redis.hset(  # type: ignore[misc]
            k.api_batch(sub),
            mapping={
                "api_status": b.processing_status,
                "expires_at": b.expires_at.isoformat(),
                "counts": ",".join(str(v) for v in tally),
            },
        )
        if b.processing_status != "ended":
            return
    if await rate.take(rt, rate.RESULTS_CALLS) > 0:
        return
    await ingest(rt, h["batch_id"], orjson.loads(h["trace"]) if h.get("trace") else None)
    await Scripts(rt.redis)["batch_ingested"](
        keys=[k.api_batch(sub), k.api_batches_open, k.batch_in_api_count], args=[sub]
    )


async def ingest(rt: Runtime, batch_id: str, batch_trace: dict[str, str] | None = None) -> int:
    """Ingest every result of an ended API batch whose request is still pending; returns how many.
    ``batch_trace``: the W3C context of the batch's create span, linked from each job's result span."""
    k = rt.keys
    n = 0
    async for r in await rt.client.messages.batches.results(batch_id):
        raw = await aw(rt.redis.hget(k.batch_items, r.custom_id))
        if raw is None:
            continue  # ingested before
        item = BatchItem.model_validate_json(raw)
        final = await ingest_result(rt, item, r.result, batch_id, batch_trace)
        async with rt.redis.pipeline(transaction=False) as p:
            p.hdel(k.batch_items, item.custom_id)
            if final:
                p.srem(k.batch_in_api(str(item.job["tags"]["batch"] or "default")), item.job_id)
            await p.execute()
        n += 1
    return n


def _attempt(
    rt: Runtime, item: BatchItem, job: Job, res: Any
) -> tuple[Attempt, dict[str, Any] | None, tuple[str, ...]]:
    base: dict[str, Any] = dict(n=item.n, tier=item.tier, model=item.model, started_at=time.time())
    if res.type == "succeeded":
        msg = res.message
        text = "".join(getattr(b, "text", "") for b in msg.content if b.type == "text")
        usage: Usage = usage_from(msg.usage.model_dump(), item.ttl)
        tier_billed = msg.usage.service_tier
        cost: Cost = pricing.price_response(
            rt.settings.spec_for(item.tier), usage, dt.datetime.now(dt.UTC).date(), tier_billed
        )
        failures = tuple(
            check_answer(text, msg.stop_reason, job.output, list(rt.settings.checks.get(job.task, [])))
        )
        attempt = Attempt(
            **base,
            status="check_failed" if failures else "ok",
            usage=usage,
            cost=cost,
            stop_reason=msg.stop_reason,
            service_tier=tier_billed,
            error=f"answer failed checks: {', '.join(failures)}" if failures else None,
            error_type="check_failed" if failures else None,
        )
        return attempt, {"text": text, "stop_reason": msg.stop_reason}, failures
    if res.type == "errored":
        err = res.error.error
        return Attempt(**base, status="error", error_type=err.type, error=err.message), None, ()
    kind = "batch_expired" if res.type == "expired" else "canceled"
    return (
        Attempt(**base, status="error", error_type=kind, error=f"request {res.type} in its Message Batch"),
        None,
        (),
    )


async def ingest_result(
    rt: Runtime, item: BatchItem, res: Any, batch_id: str, batch_trace: dict[str, str] | None = None
) -> bool:
    """Save this result's attempt, then finish the job or send its next request; True when finished."""
    job = Job.from_wire(item.job)
    with tracing.batch_result_span(job, item.model, res.type, batch_id, item.trace, batch_trace):
        return await _ingest_result(rt, item, job, res)


async def _ingest_result(rt: Runtime, item: BatchItem, job: Job, res: Any) -> bool:
    run = JobRun(rt, job, 1, None, item.job)
    held = Reservation(**item.reservation) if item.reservation else None
    done, run.attempts, paid = await rt.store.load_state(job)
    if done or len(run.attempts) > item.n:
        return True  # finished, or already moved past this request
    failures: tuple[str, ...] = ()
    if len(run.attempts) == item.n:
        attempt, answer = run.attempts[-1], paid.get(item.n)  # saved before a crash: decide again
        if attempt.status == "check_failed" and attempt.error:
            failures = tuple(attempt.error.removeprefix("answer failed checks: ").split(", "))
    else:
        attempt, answer, failures = _attempt(rt, item, job, res)
        writes = WriteBatch(rt.redis)
        if held is not None and answer is not None:
            rt.budgets.settle_into(writes, held, attempt.cost.total_pusd)  # with the attempt: once
        await run.save(attempt, answer, writes)
    if held is not None and answer is None:
        await rt.budgets.release(held)  # nothing billed; a no-op when released before a crash
    s = rt.settings
    step = outcome.next_step(
        res.type,
        tier=item.tier,
        ceiling=job.constraints.high,
        error_type=attempt.error_type,
        error_message=attempt.error,
        check_failures=failures,
        escalation=s.escalation,
        escalations=sum(1 for a in run.attempts if a.status == "check_failed"),
        max_escalations=s.max_escalations,
        errors=sum(1 for a in run.attempts if a.status == "error"),
        max_attempts=s.max_attempts,
        route_now=_route_now(run, item),
        user_canceled=res.type == "canceled" and await _canceled(rt, job),
    )
    if step.kind == "done":
        assert answer is not None
        await run.finish_done(item.route, attempt, answer["text"], answer.get("stop_reason"))
        return True
    if step.kind == "canceled":
        await run.finish_canceled(item.route, step.message or "canceled")
        return True
    if step.kind == "fail":
        out = answer or {}
        await run.finish_failed(
            item.route,
            step.error_type or "error",
            step.message or "",
            out.get("text"),
            out.get("stop_reason"),
        )
        return True
    if step.via == "batch":
        refused = await gather(run, item.route, step.tier, item.deadline_at)
        if isinstance(refused, bool):
            return False
        await run.finish_failed(item.route, "budget", refused.reason)
        return True
    with contextlib.suppress(Parked):
        await run.park(step.tier)  # realtime near the deadline: the tier queue's pipeline calls it
    return True


async def _canceled(rt: Runtime, job: Job) -> bool:
    return bool(await aw(rt.redis.hget(rt.keys.batch_meta(job.tags.batch or "default"), "canceled")))


def _route_now(run: JobRun, item: BatchItem) -> Route:
    from worker.batches.gather import route_now

    return route_now(run, item.deadline_at)
