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

import redis as sync_redis
from arq.constants import (
    in_progress_key_prefix,
)
from redis.asyncio import Redis

from jobs.keys import Keys
from jobs.tiers import TIER_ORDER, Tier
from worker.fleet import redis_scripts
from worker.fleet.tier_gate import lease_id_prefix

log = logging.getLogger("routeq.recovery")

# Heartbeat PX, refresh period, reaper scan period and the extra grace before reaping (seconds).
HEARTBEAT_TTL_S = 3.0
HEARTBEAT_EVERY_S = 0.5
SCAN_EVERY_S = 0.5
REAP_GRACE_S = 1.0


def new_owner_token(owner: str) -> str:
    """The reaper's name for a process start (its owner, ``worker.runtime.owner_id``, and a nonce)."""
    return f"{owner}:{uuid.uuid4().hex[:8]}"


def owner_of_token(token: str) -> str:
    """The process start (the owner its lease ids carry) behind an owner token."""
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
        scripts = redis_scripts.Scripts(redis, lib="agg_lib")
        self._script = scripts["recovery_reap"]
        self._fold = scripts["agg_fold"]
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
            # What a failed last flush left pending is applied before this owner is forgotten.
            await self._fold(keys=[self.keys.agg_pending(self.owner)], args=[])
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

    def _tier_keys(self, tier: Tier) -> tuple[str, str]:
        return self.keys.leases(tier), self.keys.line(tier)

    async def reap(self, owner: str) -> tuple[str, int, int] | None:
        lease_prefix = lease_id_prefix(owner_of_token(owner)) if ":" in owner else ""
        res = await self._script(
            keys=[
                self.rkeys.recovery_owners,
                self.rkeys.recovery_alive(owner),
                self.rkeys.recovery_running(owner),
                *(k for t in TIER_ORDER for k in self._tier_keys(t)),
                self.keys.agg_pending(owner),
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
        log.warning(
            "reaped dead worker %s: %d job(s) handed back, %d lease(s) freed, %d recorded job(s) added to "
            "their aggregates",
            owner, jobs, leases, int(res[2]),
        )  # fmt: skip
        got = (owner, jobs, leases)
        self.reaped.append(got)
        return got
