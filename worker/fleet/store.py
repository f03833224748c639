"""Results, attempts and aggregates in Redis, written so that at-least-once delivery bills once.

- Each model call's attempt record is appended as soon as the call ends; a paid answer is saved beside
  it, so a re-run after a crash reuses the answer instead of paying for it again.
- The final outcome is recorded by one Lua call gated on the batch's done set: aggregates move once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, TimeoutError

from jobs.contract import Job
from jobs.keys import Keys
from jobs.results import Attempt, JobResult, aggregate_increments
from jobs.settings import Settings
from worker.fleet.redis_scripts import Scripts, WriteBatch

log = logging.getLogger("routeq.store")

# How long a finished model call's outcome is held in memory while Redis is unreachable.
WRITE_PATIENCE_S = 300.0


async def persist(op: str, coro_factory: Any) -> Any:
    """Run a Redis write until it succeeds: losing it would mean paying for the call again."""
    delay, deadline = 0.1, time.monotonic() + WRITE_PATIENCE_S
    while True:
        try:
            return await coro_factory()
        except (ConnectionError, TimeoutError, OSError) as e:
            if time.monotonic() > deadline:
                raise
            log.warning("redis unavailable during %s (%s); retrying in %.1fs", op, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class Store:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys: Keys = settings.keys
        self.scripts = Scripts(redis)

    @property
    def _retention_ms(self) -> int:
        return (self.settings.job_expiry_s + self.settings.result_ttl_s) * 1000

    async def load_state(self, job: Job) -> tuple[bool, list[Attempt], dict[int, dict[str, Any]]]:
        """Done-check and ``load_attempts`` in one round trip: (done, attempts, paid answers)."""
        async with self.redis.pipeline(transaction=False) as p:
            p.sismember(self.keys.batch_done(job.tags.batch or ""), job.job_id)
            p.lrange(self.keys.attempts(job.job_id), 0, -1)
            p.hgetall(self.keys.paid(job.job_id))
            done, raw_attempts, raw_paid = await p.execute()
        if done:
            return True, [], {}
        attempts = [Attempt.model_validate_json(a) for a in raw_attempts]
        paid = {int(k): orjson.loads(v) for k, v in raw_paid.items()}
        return False, attempts, paid

    async def load_attempts(self, job_id: str) -> tuple[list[Attempt], dict[int, dict[str, Any]]]:
        async with self.redis.pipeline(transaction=False) as p:
            p.lrange(self.keys.attempts(job_id), 0, -1)
            p.hgetall(self.keys.paid(job_id))
            raw_attempts, raw_paid = await p.execute()
        attempts = [Attempt.model_validate_json(a) for a in raw_attempts]
        paid = {int(k): orjson.loads(v) for k, v in raw_paid.items()}
        return attempts, paid

    def save_attempt_into(
        self, batch: WriteBatch, job_id: str, attempt: Attempt, answer: dict[str, Any] | None = None
    ) -> None:
        """Queue the attempt record (and its paid answer) in ``batch``; written once even if re-sent."""
        ttl = self.settings.job_expiry_s + self.settings.result_ttl_s
        batch.script(
            self.scripts["attempt_save"],
            [self.keys.attempts(job_id), self.keys.paid(job_id)],
            [
                attempt.n,
                attempt.model_dump_json(),
                orjson.dumps(answer).decode() if answer is not None else "",
                ttl,
            ],
        )

    async def record(self, result: JobResult, dead_cause: dict[str, Any] | None = None) -> bool:
        """Write the final outcome; False when it was already recorded (a duplicate run)."""
        inc = aggregate_increments(result)
        args: list[Any] = [
            result.job_id,
            result.model_dump_json(),
            self.settings.result_ttl_s,
            orjson.dumps(dead_cause).decode() if dead_cause else "",
            self._retention_ms,
        ]
        for k, v in inc.items():
            args += [k, v]
        keys = self._outcome_keys(result)
        done = await persist("record", lambda: self.scripts["record"](keys=keys, args=args))
        return bool(done)

    def _outcome_keys(self, result: JobResult) -> list[str]:
        """The keys record.lua and unrecord.lua touch, in their KEYS order."""
        return [
            self.keys.result(result.job_id),
            self.keys.batch_done(result.batch),
            self.keys.batch_agg(result.batch),
            self.keys.tenant_agg(result.tenant),
            self.keys.batch_dead(result.batch),
        ]

    async def unrecord(self, result: JobResult) -> bool:
        args: list[Any] = [result.job_id]
        for k, v in aggregate_increments(result).items():
            args += [k, v]
        keys = self._outcome_keys(result)
        return bool(await self.scripts["unrecord"](keys=keys, args=args))
