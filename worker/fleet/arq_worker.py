"""The one place routeq depends on arq's internals (pinned: arq==0.28.0).

``RecoveringWorker`` overrides ``Worker._poll_iteration``, ``finish_job`` and ``finish_failed_job``
to claim with one script and to keep the owner's running set in step with arq's own keys. The claim
script also does what ``Worker.run_job`` opens with (one MULTI: GET the job, INCR and EXPIRE its retry
key); the run gets those replies from the claim instead of a round trip of its own."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from arq.connections import ArqRedis
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.utils import timestamp_ms, to_ms
from arq.worker import Worker
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.keys import Keys
from worker.fleet import redis_scripts

log = logging.getLogger("routeq.recovery")
# Most queue entries one claim looks at: entries already claimed (e.g. tier jobs waiting for a slot) sit at
# the head of a queue and are skipped, so the claim reaches ready work behind them.
CLAIM_SCAN = 2000
# arq's retry-key TTL (Worker.run_job), which the claim script sets as arq would.
RETRY_KEY_TTL_S = 88400

ClaimedReads = tuple[bytes | None, int]  # the job's serialized form (None: expired) and its delivery count
# Set in a claimed job's run task; taken by the first pipeline that run asks for, which is arq's opening
# GET/INCR/EXPIRE (see RecoveringWorker.pool).
_CLAIMED_READS: ContextVar[ClaimedReads | None] = ContextVar("routeq_claimed_reads", default=None)


class _ClaimedPipeline:
    """The opening pipeline of ``Worker.run_job`` (GET job, INCR retry, EXPIRE retry), answered from the
    claim script's replies: its commands are no-ops, its ``execute`` returns what the MULTI would have."""

    def __init__(self, reads: ClaimedReads) -> None:
        self._reads = reads

    async def __aenter__(self) -> _ClaimedPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def get(self, *args: Any, **kwargs: Any) -> _ClaimedPipeline:
        return self

    incr = expire = get

    async def execute(self) -> list[Any]:
        v, job_try = self._reads
        return [v, job_try, True]


class _ClaimedRunPool:
    """The worker's pool as one claimed run's opening sees it: its first pipeline is the claim's replies;
    anything else goes to the real pool."""

    def __init__(self, pool: ArqRedis, reads: ClaimedReads) -> None:
        self._pool, self._reads = pool, reads

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        _CLAIMED_READS.set(None)
        return _ClaimedPipeline(self._reads)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class RecoveringWorker(Worker):
    """An arq Worker whose claims carry the owner token and are listed in the owner's running set."""

    def __init__(
        self,
        *args: Any,
        recovery_owner: str,
        recovery_keys: Keys,
        finished_elsewhere: set[str] | None = None,
        calls_prefix: str = "",
        fresh: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # With ``calls_prefix`` (a queue whose arq ids are routeq job ids), the claim also tells which jobs
        # have no calls hash; their ids go into ``fresh`` (shared with the job function, which takes them
        # out), so a first run skips loading an empty history: a round trip per job.
        self.calls_prefix = calls_prefix
        self.fresh = fresh if fresh is not None else set()
        # Jobs whose record already did arq's finish (worker/fleet/store.py:ArqRun), shared by the process's
        # workers: their finish here is skipped.
        self.finished_elsewhere = finished_elsewhere if finished_elsewhere is not None else set()
        self.recovery_owner = recovery_owner
        self.recovery_running = recovery_keys.recovery_running(recovery_owner)
        self._claim_script = self.pool.register_script(redis_scripts.source("claim"))
        self._claimed: dict[str, ClaimedReads] = {}  # claimed, run task not started yet

    @property
    def pool(self) -> ArqRedis:
        reads = _CLAIMED_READS.get()
        if reads is None:
            return super().pool
        return _ClaimedRunPool(super().pool, reads)  # type: ignore[return-value]

    async def run_job(self, job_id: str, score: int) -> None:
        reads = self._claimed.pop(job_id, None)
        # With abort support arq's opening also reads the abort set; then it asks Redis itself.
        if reads is not None and not self.allow_abort_jobs:
            _CLAIMED_READS.set(reads)  # this task's context only
        await super().run_job(job_id, score)

    async def _poll_iteration(self) -> None:
        # arq 0.28's Worker._poll_iteration with its pick (ZRANGEBYSCORE, then one WATCH/MULTI claim per id)
        # replaced by one claim script. burst/max_burst_jobs are not used by routeq (app.run drains itself).
        if self.allow_pick_jobs and self.job_counter < self.max_jobs:
            await self.claim_ready(self.max_jobs - self.job_counter)
        if self.allow_abort_jobs:
            await self._cancel_aborted_jobs()
        for job_id, t in list(self.tasks.items()):
            if t.done():
                del self.tasks[job_id]
                t.result()  # errors in run_job propagate, as in arq
        await self.heart_beat()

    async def claim_ready(self, wanted: int) -> int:
        """Claim up to ``wanted`` ready jobs in one round trip and start them; returns how many."""
        try:
            got = await self._claim_script(
                keys=[self.queue_name, self.recovery_running],
                args=[
                    timestamp_ms(),
                    wanted,
                    in_progress_key_prefix,
                    int(self.in_progress_timeout_s * 1000),
                    self.recovery_owner,
                    CLAIM_SCAN,
                    self.calls_prefix,
                    job_key_prefix,
                    retry_key_prefix,
                    RETRY_KEY_TTL_S,
                ],
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            # The script may have run with its reply lost (a Redis restart): hand such claims back.
            await self._hand_back_orphans(e)
            return 0
        for i in range(0, len(got), 5):
            job_id = got[i].decode()
            if got[i + 2] == 1:
                self.fresh.add(job_id)
            self._claimed[job_id] = (got[i + 3], int(got[i + 4]))
            await self.sem.acquire()  # free: job_counter < max_jobs, and the two move together
            self.job_counter += 1
            t = self.loop.create_task(self.run_job(job_id, int(float(got[i + 1]))))
            t.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = t
        return len(got) // 5

    async def _hand_back_orphans(self, error: BaseException) -> None:
        """Claims of this queue listed as ours with no task running them are released for a re-claim."""
        try:
            ids = [i.decode() for i in await self.pool.smembers(self.recovery_running)]  # type: ignore[misc]
            for job_id in ids:
                running = self.tasks.get(job_id)
                if running is not None and not running.done():
                    continue
                if await self.pool.zscore(self.queue_name, job_id) is None:
                    continue  # another queue's job (same owner, another puller) or already finished
                key = in_progress_key_prefix + job_id
                got = await self.pool.get(key)
                if got is not None and got.decode() == self.recovery_owner:
                    log.warning("claim of %s went through despite %s: handing it back", job_id, error)
                    await self.pool.delete(key)
                    await self.pool.srem(self.recovery_running, job_id)  # type: ignore[misc]
        except Exception as e:  # still unreachable: the reaper's owner token rule covers a later death
            log.error("cannot check claims after %s (then %s); will retry on the next error", error, e)

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        # arq 0.28's Worker.finish_job with the SREM from the owner's running set in the same MULTI.
        self.fresh.discard(job_id)  # a run that never reached the job function (e.g. its job key expired)
        if job_id in self.finished_elsewhere:
            self.finished_elsewhere.discard(job_id)
            return
        async with self.pool.pipeline(transaction=True) as tr:
            delete_keys = []
            in_progress_key = in_progress_key_prefix + job_id
            if keep_in_progress is None:
                delete_keys += [in_progress_key]
                tr.srem(self.recovery_running, job_id)
            else:
                tr.pexpire(in_progress_key, to_ms(keep_in_progress))
            if finish:
                if result_data:
                    expire = None if keep_result_forever else result_timeout_s
                    tr.set(result_key_prefix + job_id, result_data, px=to_ms(expire))
                delete_keys += [retry_key_prefix + job_id, job_key_prefix + job_id]
                if self.allow_abort_jobs:  # only Job.abort writes it, read only when aborts are allowed
                    tr.zrem(abort_jobs_ss, job_id)
                tr.zrem(self.queue_name, job_id)
            elif incr_score:
                tr.zincrby(self.queue_name, incr_score, job_id)
            if delete_keys:
                tr.delete(*delete_keys)
            await tr.execute()

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        # arq 0.28's Worker.finish_failed_job, likewise.
        if job_id in self.finished_elsewhere:  # e.g. a timeout that hit after the record
            self.finished_elsewhere.discard(job_id)
            return
        async with self.pool.pipeline(transaction=True) as tr:
            tr.delete(
                retry_key_prefix + job_id,
                in_progress_key_prefix + job_id,
                job_key_prefix + job_id,
            )
            tr.srem(self.recovery_running, job_id)
            if self.allow_abort_jobs:
                tr.zrem(abort_jobs_ss, job_id)
            tr.zrem(self.queue_name, job_id)
            keep_result = self.keep_result_forever or self.keep_result_s > 0
            if result_data is not None and keep_result:
                expire = 0 if self.keep_result_forever else self.keep_result_s
                tr.set(result_key_prefix + job_id, result_data, px=to_ms(expire))
            await tr.execute()
