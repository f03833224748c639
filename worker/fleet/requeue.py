"""`routeq retry`: put a batch's failed jobs back on the queue, undoing their recorded outcome first.

Dead letters keep the job's payload, since arq deletes its own copy when a job ends. The job's attempt
history stays, so the new outcome still carries (and bills) every call made before; the re-run gets a
fresh attempt budget (``fresh_from``: the attempts already made do not count toward ``max_attempts``).
"""

from __future__ import annotations

import time

import orjson
from redis.asyncio import Redis

from jobs.connections import aw
from jobs.contract import Job
from jobs.keys import JOB_FUNCTION
from jobs.reports import load_result
from jobs.serialization import queue_arq_job
from jobs.settings import Settings
from worker.fleet.store import Store


async def retry_batch(redis: Redis, settings: Settings, batch: str, dead_only: bool = True) -> int:
    dead = await aw(redis.hgetall(settings.keys.batch_dead(batch)))
    store = Store(redis, settings)
    n = 0
    for raw_id, raw_cause in dead.items():
        n += await _requeue(redis, settings, store, batch, raw_id.decode(), raw_cause, dead_only)
    return n


async def retry_job(redis: Redis, settings: Settings, batch: str, job_id: str) -> bool:
    """Re-enqueue one dead letter of the batch; False when it is not (or no longer) a dead letter."""
    raw_cause = await aw(redis.hget(settings.keys.batch_dead(batch), job_id))
    if raw_cause is None:
        return False
    return bool(await _requeue(redis, settings, Store(redis, settings), batch, job_id, raw_cause, True))


async def _requeue(
    redis: Redis,
    settings: Settings,
    store: Store,
    batch: str,
    job_id: str,
    raw_cause: bytes | str,
    dead_only: bool,
) -> int:
    keys = settings.keys
    cause = orjson.loads(raw_cause)
    if "job" not in cause:
        return 0  # a payload that was corrupt in Redis: nothing sound to re-run
    if not dead_only and cause.get("error_type") == "invalid_payload":
        return 0
    job = Job.from_wire(cause["job"])
    old = await load_result(redis, keys, job_id)
    if old is not None and old.status == "canceled":
        # Only records from before the canceled status are dead letters; they were counted as failed.
        old = old.model_copy(update={"status": "failed"})
    if old is not None and not await store.unrecord(old):
        return 0
    # A fresh attempt budget: the attempts made so far stay in the trace but are not counted again.
    made = len((await store.load_attempts(job_id))[0])
    async with redis.pipeline(transaction=True) as p:
        queue_arq_job(
            p,
            queue=keys.intake_queue,
            job_id=job_id,
            function=JOB_FUNCTION,
            args=[job.to_wire()],
            kwargs={"fresh_from": made} if made else {},
            expiry_ms=settings.job_expiry_s * 1000,
            now_ms=int(time.time() * 1000),
            replace=True,
        )
        p.hdel(keys.batch_dead(batch), job_id)
        await p.execute()
    return 1
