"""How a job enters and leaves a worker's queues: a payload read from Redis (a damaged one fails its job
with a recorded reason, and the worker carries on), parking on a tier's own queue, holding for a budget.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import ValidationError

from jobs.contract import Job
from jobs.keys import JOB_FUNCTION
from jobs.results import JobResult
from jobs.serialization import CORRUPT_MARK, queue_arq_job
from jobs.sources import explain
from jobs.tiers import Tier
from worker.runtime import Runtime

log = logging.getLogger("routeq.pipeline")


async def parse_payload(rt: Runtime, arq_id: str, payload: Any) -> Job | None:
    """A payload damaged in Redis fails that job with a clear error; the worker carries on."""
    if isinstance(payload, dict) and CORRUPT_MARK in payload:
        reason = str(payload[CORRUPT_MARK])
    else:
        try:
            return Job.from_wire(payload)
        except ValidationError as e:
            reason = f"payload in Redis is not a valid job: {explain(e)}"
        except Exception as e:
            reason = f"payload in Redis is not a valid job: {e}"
    job_id = arq_id.split(".")[0]
    batch = tenant = "unknown"
    if isinstance(payload, dict):
        tags = payload.get("tags")
        if isinstance(tags, dict):
            batch = str(tags.get("batch") or batch)
            tenant = str(tags.get("tenant") or tenant)
    log.error("job %s: invalid payload in Redis (the reason is in its result)", job_id)
    result = JobResult(
        job_id=job_id,
        batch=batch,
        tenant=tenant,
        task=str(payload.get("task", "?")) if isinstance(payload, dict) else "?",
        status="failed",
        error=reason,
        error_type="invalid_payload",
        finished_at=time.time(),
    )
    await rt.store.record(result, dead_cause={"error_type": "invalid_payload", "error": reason})
    rt.metrics.observe_result(result)
    return None


async def park(rt: Runtime, job_id: str, wire: Any, tier: Tier, fresh_from: int = 0) -> None:
    """Hand the job to the tier's own queue (only that tier's pullers take it: no head-of-line block).

    What ``enqueue_job`` writes, in one MULTI instead of its WATCH round trips. A re-run of an intake job
    parked before (its run died before arq's finish) finds the document there and adds nothing.
    """
    kwargs: dict[str, Any] = {"parked": tier.value}
    if fresh_from:
        kwargs["fresh_from"] = fresh_from
    async with rt.redis.pipeline(transaction=True) as p:
        queue_arq_job(
            p,
            queue=rt.keys.tier_queue(tier),
            job_id=f"{job_id}.{tier.value}",
            function=JOB_FUNCTION,
            args=[wire],
            kwargs=kwargs,
            expiry_ms=rt.settings.job_expiry_s * 1000,
            now_ms=int(time.time() * 1000),
        )
        await p.execute()


async def hold(rt: Runtime, batch: str, job_id: str, retry_s: float) -> None:
    """Count the job as held by a budget cap until its next try (``routeq status`` shows ``held``)."""
    s = rt.settings
    key = rt.keys.batch_held(batch)
    async with rt.redis.pipeline(transaction=False) as p:
        p.zadd(key, {job_id: int((time.time() + retry_s) * 1000)})
        p.pexpire(key, (s.job_expiry_s + s.result_ttl_s) * 1000)
        await p.execute()
