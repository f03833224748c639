"""Results, attempts and aggregates in Redis, written so that at-least-once delivery bills once.

- Each model call's attempt record is saved (``Keys.calls``) as soon as the call ends; a paid answer beside
  it, so a re-run after a crash reuses the answer instead of paying for it again. A job's last call is
  saved by its record's script (``record.lua``), in the same step.
- The final outcome is recorded by one Lua call gated on the batch's done set: aggregates move once
  (in a worker, with the process's next aggregates flush: ``worker/fleet/aggregates.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, TimeoutError

from jobs.contract import Job
from jobs.keys import Keys
from jobs.results import Attempt, JobResult, aggregate_increments
from jobs.settings import Settings
from worker.fleet.aggregates import Expiry, Increment, PendingAggregates, aggregate_entry, entry_of
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


# A job's last attempt, its paid answer and its spend on budgets without a cap: saved by its record.
LastAttempt = tuple[Attempt, dict[str, Any] | None, tuple[list[Increment], list[Expiry]] | None]


@dataclass(frozen=True)
class ArqRun:
    """The arq job run a record ends: ``record.lua`` deletes its arq keys (as arq 0.28's finish does) in
    the same step, and its id goes into ``finished``, so ``RecoveringWorker.finish_job`` skips its own."""

    job_id: str
    queue: str
    running: str  # the owner's running set (worker/fleet/recovery.py)
    finished: set[str]

    def keys(self) -> list[str]:
        i = self.job_id
        return [
            in_progress_key_prefix + i,
            retry_key_prefix + i,
            job_key_prefix + i,
            self.queue,
            self.running,
        ]


def parse_calls(raw: dict[bytes, bytes]) -> tuple[list[Attempt], dict[int, dict[str, Any]]]:
    """A job's calls hash (``Keys.calls``) as its attempts in order and its paid answers by attempt no."""
    attempts: dict[int, Attempt] = {}
    paid: dict[int, dict[str, Any]] = {}
    for field, value in raw.items():
        n, call = int(field), orjson.loads(value)
        attempts[n] = Attempt.model_validate(call["attempt"])
        if call["answer"] is not None:
            paid[n] = call["answer"]
    return [attempts[n] for n in sorted(attempts)], paid


def call_json(attempt: Attempt, answer: dict[str, Any] | None) -> str:
    """A call's field in the calls hash: its attempt record and its paid answer, written as one."""
    return f'{{"attempt":{attempt.model_dump_json()},"answer":{orjson.dumps(answer).decode()}}}'


def paid_answer(raw: bytes | str | None) -> dict[str, Any] | None:
    """The paid answer in a call's field (``call_json``), if the call was paid."""
    answer = orjson.loads(raw)["answer"] if raw is not None else None
    return answer if isinstance(answer, dict) else None


class Store:
    def __init__(self, redis: Redis, settings: Settings, pending: PendingAggregates | None = None) -> None:
        """With ``pending``, recorded jobs reach their aggregates with its next flush; without, at once."""
        self.redis = redis
        self.settings = settings
        self.keys: Keys = settings.keys
        self._agg_scripts = Scripts(redis, lib="agg_lib")
        self.pending = pending

    @property
    def _retention_ms(self) -> int:
        return (self.settings.job_expiry_s + self.settings.result_ttl_s) * 1000

    async def load_state(
        self, job: Job, check_done: bool = True
    ) -> tuple[bool, list[Attempt], dict[int, dict[str, Any]]]:
        """Done-check and ``load_attempts`` in one round trip: (done, attempts, paid answers).

        ``check_done=False`` (an arq job's first delivery) leaves the done-check out: a recorded job is
        never delivered again as a first try (the producer never re-enqueues an accepted id, a record
        finishes its arq job in the same step, ``routeq retry`` unrecords before re-queueing), and if one
        ever were, its calls make the re-run reuse every paid answer and its record is refused."""
        if not check_done:
            return False, *await self.load_attempts(job.job_id)
        async with self.redis.pipeline(transaction=False) as p:
            p.sismember(self.keys.batch_done(job.tags.batch or ""), job.job_id)
            p.hgetall(self.keys.calls(job.job_id))
            done, raw_calls = await p.execute()
        if done:
            return True, [], {}
        return False, *parse_calls(raw_calls)

    async def load_attempts(self, job_id: str) -> tuple[list[Attempt], dict[int, dict[str, Any]]]:
        return parse_calls(await self.redis.hgetall(self.keys.calls(job_id)))  # type: ignore[misc]

    def _attempt_save(
        self,
        job_id: str,
        attempt: Attempt,
        answer: dict[str, Any] | None,
        spend: tuple[list[Increment], list[Expiry]] | None,
    ) -> tuple[list[Any], Callable[[], None] | None]:
        """An attempt's save as ``attempt_save.lua`` (and ``record.lua``) take it: its ARGV, and, when its
        spend goes to the pending hash, what to call once the script says it wrote the attempt."""
        ttl = self.settings.job_expiry_s + self.settings.result_ttl_s
        args: list[Any] = [attempt.n, call_json(attempt, answer), ttl]
        pending = self.pending
        if spend is None or pending is None:
            return [*args, "", ""], None
        member = f"spend:{job_id}:{attempt.n}"
        return [*args, member, entry_of(*spend)], lambda: pending.added(member, *spend)

    def save_attempt_into(
        self,
        batch: WriteBatch,
        job_id: str,
        attempt: Attempt,
        answer: dict[str, Any] | None = None,
        spend: tuple[list[Increment], list[Expiry]] | None = None,
    ) -> None:
        """Queue the attempt record (and its paid answer) in ``batch``; written once even if re-sent.

        ``spend``: the call's spend on budgets without a cap (``Budgets.spend_entry``), counted with the
        attempt's write (needs ``pending``)."""
        args, on_saved = self._attempt_save(job_id, attempt, answer, spend)
        keys = [self.keys.calls(job_id)]
        then = None
        if on_saved is not None and self.pending is not None:
            keys.append(self.pending.key)

            def then(reply: Any) -> None:
                if int(reply) == 1:
                    on_saved()

        batch.script(self._agg_scripts["attempt_save"], keys, args, then=then)

    async def record(
        self,
        result: JobResult,
        dead_cause: dict[str, Any] | None = None,
        arq: ArqRun | None = None,
        writes: WriteBatch | None = None,
        last: LastAttempt | None = None,
    ) -> bool:
        """Write the final outcome; False when it was already recorded (a duplicate run). With ``arq``, the
        arq job run that made it is finished in the same step. With ``writes``, the record goes after what
        that batch holds (the last call's slot release), in its one round trip. With ``last``, the job's
        last attempt is saved by the same script (as :meth:`save_attempt_into` would, once), whether or not
        the record counts."""
        incs, expiries = self._aggregate_entry(result)
        keys = self._outcome_keys(result)
        later = self.pending is not None and not self.pending.quiet()
        mode = "" if self.pending is None else "later" if later else "now"
        if self.pending is not None:
            keys.append(self.pending.key)
        if arq is not None:
            keys += arq.keys()
        save: list[Any] = ["", "", "", "", ""]
        on_saved = None
        if last is not None:
            save, on_saved = self._attempt_save(result.job_id, *last)
            keys.append(self.keys.calls(result.job_id))
        args: list[Any] = [
            result.job_id,
            result.model_dump_json(),
            self.settings.result_ttl_s,
            orjson.dumps(dead_cause).decode() if dead_cause else "",
            self._retention_ms,
            entry_of(incs, expiries),
            mode,
            arq.job_id if arq is not None else "",
            *save,
        ]
        script = self._agg_scripts["record"]
        if writes is None:
            reply = await persist("record", lambda: script(keys=keys, args=args))
        else:
            replies: list[Any] = []
            writes.script(script, keys, args, then=replies.append)
            await persist("record", writes.execute)
            reply = replies[-1]
        done, saved = bool(int(reply[0])), bool(int(reply[1]))
        if arq is not None:
            arq.finished.add(arq.job_id)
        if saved and on_saved is not None:
            on_saved()
        pending = self.pending
        # Refused as a duplicate, yet pending here: a re-sent record whose first reply was lost.
        if (
            pending is not None
            and later
            and (
                done or await self.redis.hexists(pending.key, result.job_id)  # type: ignore[misc]
            )
        ):
            pending.added(result.job_id, incs, expiries)
        return done

    def _aggregate_entry(self, result: JobResult) -> tuple[list[Increment], list[Expiry]]:
        batch_agg, tenant_agg = self.keys.batch_agg(result.batch), self.keys.tenant_agg(result.tenant)
        incs, expiries = aggregate_entry(
            batch_agg, tenant_agg, self._retention_ms, aggregate_increments(result)
        )
        # The done set ages out with the batch too: set once per flush, not once per job in record.lua.
        return incs, [*expiries, (self.keys.batch_done(result.batch), self._retention_ms)]

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
        keys = [*self._outcome_keys(result), self.keys.recovery_owners]
        args = [result.job_id, self.keys.agg_pending_prefix(), entry_of(*self._aggregate_entry(result))]
        return bool(await self._agg_scripts["unrecord"](keys=keys, args=args))
