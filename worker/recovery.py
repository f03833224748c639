"""Fast recovery of a dead worker's jobs: heartbeats, owned claims, and a reaper in every worker.

arq alone re-runs a SIGKILLed worker's job only when its ``arq:in-progress:<id>`` key expires, i.e. the
longest function timeout + 10 s (15 minutes here). This module brings that down to a few seconds:

* **Owned claims.** ``RecoveringWorker`` claims jobs with one script (``lua/claim.lua``) that writes
  what arq's claim writes (the in-progress key with a PX), except that the key's value is this process's
  *owner token* instead of ``1``, and the job id is added to the owner's running set atomically. arq only
  ever tests that key for existence, so nothing else changes. The id leaves the set in the same MULTI as
  arq's finish (or hand-back) of the job. One script per poll instead of 4-5 round trips per job, and no
  lost races between pullers: that is most of routeq's per-job Redis traffic saved.
* **Heartbeat.** A *thread* (not an asyncio task) refreshes ``<prefix>:recovery:alive:<owner>`` with a PX
  of ``ttl_s`` every ``beat_s``. A thread keeps beating while the event loop is busy or stalled, so a
  worker that is merely slow stays alive; only a dead process (or one frozen for ``ttl_s``) stops beating.
* **Reaper.** Every worker scans the registered owners every ``scan_s``. An owner whose heartbeat key has
  been missing for ``grace_s`` *as seen by a reaper that is itself connected* is reaped by one Lua call
  that re-checks the heartbeat atomically, deletes only the in-progress keys whose value is that owner's
  token (a stale set entry for a job another worker now runs is left alone), frees the owner's tier
  leases (so its slots come back now, not after ``lease_ttl_s``), takes its waiters out of the tiers'
  lines and forgets the owner. arq then claims
  the jobs again on its next poll; the pipeline's persisted attempts and paid answers make the re-run
  reuse anything already paid for.

Redis restarts: heartbeats whose PX ran out while Redis was down come back within ``beat_s`` of the
reconnection, and the grace period (measured from the reaper's first *successful* scan that saw the key
missing) covers that, so a restart does not reap live workers.

Keys: ``Keys.recovery_owners``, ``recovery_alive(owner)``, ``recovery_running(owner)`` (jobs/keys.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from typing import Any

import redis as sync_redis
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.utils import timestamp_ms, to_ms
from arq.worker import Worker
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.keys import Keys
from jobs.tiers import TIER_ORDER, Tier
from worker import scripts
from worker.limits import lease_id_prefix

log = logging.getLogger("routeq.recovery")

# Heartbeat PX, refresh period, reaper scan period and the extra grace before reaping (seconds).
HEARTBEAT_TTL_S = 3.0
HEARTBEAT_EVERY_S = 0.5
SCAN_EVERY_S = 0.5
REAP_GRACE_S = 1.0
# Most queue entries one claim looks at: entries already claimed (e.g. tier jobs waiting for a slot) sit at
# the head of a queue and are skipped, so the claim reaches ready work behind them.
CLAIM_SCAN = 2000


def new_owner_token(owner: str) -> str:
    """Unique per process start: ``host:pid`` can be reused, a nonce cannot."""
    return f"{owner}:{uuid.uuid4().hex[:8]}"


def owner_of_token(token: str) -> str:
    """The process (``host:pid``, the owner its lease ids carry) behind an owner token."""
    return token.rsplit(":", 1)[0]


class Heartbeat:
    """A daemon thread with its own (sync) connection that keeps ``alive(owner)`` set."""

    def __init__(self, url: str, keys: Keys, owner: str, ttl_s: float, every_s: float) -> None:
        self.url, self.keys, self.owner = url, keys, owner
        self.ttl_ms, self.every_s = max(1, int(ttl_s * 1000)), every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="routeq-heartbeat", daemon=True)
        self.lapses = 0  # times the key was found missing after the first beat (stall or Redis restart)
        self._client: sync_redis.Redis | None = None

    def beat_once(self, client: sync_redis.Redis, first: bool) -> None:
        p = client.pipeline(transaction=True)
        p.set(self.keys.recovery_alive(self.owner), b"1", px=self.ttl_ms, get=True)
        p.sadd(self.keys.recovery_owners, self.owner)
        previous, _ = p.execute()
        if previous is None and not first:
            self.lapses += 1
            log.warning("heartbeat of %s had lapsed (Redis restart or a stall over the TTL)", self.owner)

    def start(self) -> None:
        self._client = sync_redis.Redis.from_url(self.url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.beat_once(self._client, first=True)  # registered before any job is claimed
        self._thread.start()

    def _run(self) -> None:
        assert self._client is not None
        while not self._stop.wait(self.every_s):
            try:
                self.beat_once(self._client, first=False)
            except Exception as e:  # Redis down: keep trying; the reaper's grace covers short gaps
                log.debug("heartbeat failed: %s", e)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()


class Recovery:
    """Registration, heartbeat and reaper of one worker process."""

    def __init__(
        self,
        redis: Redis,
        url: str,
        keys: Keys,
        owner: str,
        *,
        lease_owner: str | None = None,
        ttl_s: float = HEARTBEAT_TTL_S,
        beat_s: float = HEARTBEAT_EVERY_S,
        scan_s: float = SCAN_EVERY_S,
        grace_s: float = REAP_GRACE_S,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.rkeys = keys
        self.owner = owner
        self.lease_owner = lease_owner
        self.scan_s, self.grace_s = scan_s, grace_s
        self.heartbeat = Heartbeat(url, self.rkeys, owner, ttl_s, beat_s)
        self._script = redis.register_script(scripts.source("recovery_reap"))
        self._missing_since: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.reaped: list[tuple[str, int, int]] = []  # (owner, jobs freed, leases freed)

    async def start(self) -> None:
        await asyncio.to_thread(self.heartbeat.start)
        self._task = asyncio.create_task(self._reaper(), name="routeq-reaper")

    async def close(self) -> None:
        """Clean exit (after arq finished or handed back every job): deregister at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await asyncio.to_thread(self.heartbeat.stop)
        with contextlib.suppress(Exception):
            async with self.redis.pipeline(transaction=True) as p:
                p.delete(self.rkeys.recovery_alive(self.owner), self.rkeys.recovery_running(self.owner))
                p.srem(self.rkeys.recovery_owners, self.owner)
                await p.execute()

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(self.scan_s)
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis down: forget what was seen, so grace restarts after reconnect
                self._missing_since.clear()
                log.debug("reaper scan failed: %s", e)

    async def scan(self) -> list[tuple[str, int, int]]:
        """One pass: reap owners whose heartbeat has been missing for ``grace_s``; returns what was reaped."""
        owners = [o.decode() for o in await self.redis.smembers(self.rkeys.recovery_owners)]  # type: ignore[misc]
        others = [o for o in owners if o != self.owner]
        if not others:
            self._missing_since.clear()
            return []
        async with self.redis.pipeline(transaction=False) as p:
            for o in others:
                p.exists(self.rkeys.recovery_alive(o))
            alive = await p.execute()
        now = time.monotonic()
        done: list[tuple[str, int, int]] = []
        for o, up in zip(others, alive, strict=True):
            if up:
                self._missing_since.pop(o, None)
                continue
            first = self._missing_since.setdefault(o, now)
            if now - first < self.grace_s:
                continue
            got = await self.reap(o)
            self._missing_since.pop(o, None)
            if got is not None:
                done.append(got)
        for gone in set(self._missing_since) - set(others):
            self._missing_since.pop(gone, None)
        return done

    def _tier_keys(self, tier: Tier) -> tuple[str, str, str]:
        return self.keys.leases(tier), self.keys.line(tier), self.keys.line_info(tier)

    async def reap(self, owner: str) -> tuple[str, int, int] | None:
        lease_prefix = lease_id_prefix(owner_of_token(owner)) if ":" in owner else ""
        res = await self._script(
            keys=[
                self.rkeys.recovery_owners,
                self.rkeys.recovery_alive(owner),
                self.rkeys.recovery_running(owner),
                *(k for t in TIER_ORDER for k in self._tier_keys(t)),
            ],
            args=[
                owner,
                in_progress_key_prefix,
                lease_prefix,
                self.keys.limits_channel,
                *(t.value for t in TIER_ORDER),
            ],
        )
        jobs, leases = int(res[0]), int(res[1])
        if jobs < 0:
            return None
        log.warning("reaped dead worker %s: %d job(s) handed back, %d lease(s) freed", owner, jobs, leases)
        got = (owner, jobs, leases)
        self.reaped.append(got)
        return got


class RecoveringWorker(Worker):
    """An arq Worker whose claims carry the owner token and are listed in the owner's running set."""

    def __init__(self, *args: Any, recovery_owner: str, recovery_keys: Keys, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recovery_owner = recovery_owner
        self.recovery_running = recovery_keys.recovery_running(recovery_owner)
        self._claim_script = self.pool.register_script(scripts.source("claim"))

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
                ],
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            # The script may have run with its reply lost (a Redis restart): hand such claims back.
            await self._hand_back_orphans(e)
            return 0
        for i in range(0, len(got), 2):
            job_id = got[i].decode()
            await self.sem.acquire()  # free: job_counter < max_jobs, and the two move together
            self.job_counter += 1
            t = self.loop.create_task(self.run_job(job_id, int(float(got[i + 1]))))
            t.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = t
        return len(got) // 2

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
                tr.zrem(abort_jobs_ss, job_id)
                tr.zrem(self.queue_name, job_id)
            elif incr_score:
                tr.zincrby(self.queue_name, incr_score, job_id)
            if delete_keys:
                tr.delete(*delete_keys)
            await tr.execute()

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        # arq 0.28's Worker.finish_failed_job, likewise.
        async with self.pool.pipeline(transaction=True) as tr:
            tr.delete(
                retry_key_prefix + job_id,
                in_progress_key_prefix + job_id,
                job_key_prefix + job_id,
            )
            tr.srem(self.recovery_running, job_id)
            tr.zrem(abort_jobs_ss, job_id)
            tr.zrem(self.queue_name, job_id)
            keep_result = self.keep_result_forever or self.keep_result_s > 0
            if result_data is not None and keep_result:
                expire = 0 if self.keep_result_forever else self.keep_result_s
                tr.set(result_key_prefix + job_id, result_data, px=to_ms(expire))
            await tr.execute()
