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
from jobs.serialization import arq_job_payload
from jobs.settings import Settings
from worker.store import Store


async def retry_batch(redis: Redis, settings: Settings, batch: str, dead_only: bool = True) -> int:
    keys = settings.keys
    store = Store(redis, settings)
    dead = await aw(redis.hgetall(keys.batch_dead(batch)))
    n = 0
    for raw_id, raw_cause in dead.items():
        job_id = raw_id.decode()
        cause = orjson.loads(raw_cause)
        if "job" not in cause:
            continue  # a payload that was corrupt in Redis: nothing sound to re-run
        if not dead_only and cause.get("error_type") == "invalid_payload":
            continue
        job = Job.from_wire(cause["job"])
        old = await load_result(redis, keys, job_id)
        if old is not None and not await store.unrecord(old):
            continue
        now_ms = int(time.time() * 1000)
        # A fresh attempt budget: the attempts made so far stay in the trace but are not counted again.
        made = int(await aw(redis.llen(keys.attempts(job_id))))
        kwargs = {"fresh_from": made} if made else {}
        async with redis.pipeline(transaction=True) as p:
            p.psetex(
                f"arq:job:{job_id}",
                settings.job_expiry_s * 1000,
                arq_job_payload(JOB_FUNCTION, [job.to_wire()], kwargs, now_ms),
            )
            p.zadd(keys.intake_queue, {job_id: now_ms})
            p.hdel(keys.batch_dead(batch), job_id)
            await p.execute()
        n += 1
    return n
