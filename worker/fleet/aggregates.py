"""Batch and tenant aggregates moved once per ~100 ms per process, instead of ~27 HINCRBYs per job.

``record.lua`` stays the one idempotent step that says "this job counted" (its done-set membership and
its result); in a worker it also leaves the job's entry (``agg_lib.lua``: its increments) in the
process's pending hash, ``Keys.agg_pending(owner)``. A call's spend on budgets without a cap goes the same
way, left by the ``attempt_save.lua`` (or, for a job's last call, ``record.lua``) call that writes the
attempt once. :class:`PendingAggregates` remembers what it left there, sums it in memory, and every
``FLUSH_EVERY_S`` applies the sums in one ``agg_flush.lua`` call that also deletes those members from the
pending hash. Exactly once, whoever applies an entry:

* the flush applies its sums only if every member is still pending, else each remaining member from its
  stored entry (a member already gone was applied by someone else);
* a process that dies before its flush leaves its entries in the hash: the reaper that hands back its
  jobs applies them in the same script (``recovery_reap.lua``), and a clean exit flushes, then applies
  whatever a failed flush left (``Recovery.close``);
* ``routeq retry`` (``unrecord.lua``) deletes a still-pending entry instead of subtracting it.

A record applies its own increments at once (as outside a worker) when the process recorded nothing in
the last ``FLUSH_EVERY_S``, so only a process busy enough to batch pays any lag: readers of the aggregates
(``routeq status``/``report``, the web view) then see a finished job at most ``FLUSH_EVERY_S`` (plus a
Redis round trip) after its result; a job's fields always move together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs.keys import Keys
from jobs.results import BATCH_ONLY
from worker.fleet.redis_scripts import Scripts

log = logging.getLogger("routeq.aggregates")

FLUSH_EVERY_S = 0.1
# Every this many flushes, look for entries of this process it lost track of (PendingAggregates.adopt).
SWEEP_EVERY = 50
# Most members one flush call carries (the script unpacks them onto Lua's stack).
MAX_MEMBERS = 500


Increment = tuple[str, str, int]  # (hash key, field, delta)
Expiry = tuple[str, int]  # (key, PEXPIRE ms)


def entry_of(incs: Iterable[Increment], expiries: Iterable[Expiry]) -> str:
    """An entry as ``agg_lib.lua`` reads it."""
    return "\n".join([*(f"+ {k} {f} {v}" for k, f, v in incs), *(f"~ {k} {ms}" for k, ms in expiries)])


def aggregate_entry(
    batch_agg: str, tenant_agg: str, retention_ms: int, inc: Mapping[str, int]
) -> tuple[list[Increment], list[Expiry]]:
    """A recorded job's increments: every field to its batch's aggregate, all but the batch-only ones
    (a per-minute series) to its tenant's as well; the batch aggregate ages out with the batch."""
    incs: list[Increment] = []
    for field, v in inc.items():
        incs.append((batch_agg, field, v))
        if not field.startswith(BATCH_ONLY):
            incs.append((tenant_agg, field, v))
    return incs, [(batch_agg, retention_ms)]


def parse_entry(entry: str) -> tuple[list[Increment], list[Expiry]]:
    """The inverse of :func:`entry_of`."""
    incs: list[Increment] = []
    expiries: list[Expiry] = []
    for line in entry.split("\n"):
        parts = line.split(" ")
        if parts[0] == "+" and len(parts) == 4:
            incs.append((parts[1], parts[2], int(parts[3])))
        elif parts[0] == "~" and len(parts) == 3:
            expiries.append((parts[1], int(parts[2])))
    return incs, expiries


class PendingAggregates:
    """The entries this process left in its pending hash that are not yet applied."""

    def __init__(self, redis: Redis, keys: Keys, owner: str, every_s: float = FLUSH_EVERY_S) -> None:
        self._redis = redis
        self.key = keys.agg_pending(owner)
        self.every_s = every_s
        self._script = Scripts(redis, lib="agg_lib")["agg_flush"]
        self._members: list[tuple[str, list[Increment], list[Expiry]]] = []
        self._ids: set[str] = set()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_record = -float("inf")  # when this process last recorded a job (at once or pending)

    def __len__(self) -> int:
        return len(self._members)

    def quiet(self) -> bool:
        """Nothing recorded for ``every_s``: a record may apply its increments at once (so a lone job's
        totals never lag) and restarts the window; while records keep coming, they go through the flush.
        (Counting only records applied at once let the first record after every flush of a busy process
        go at once: about one job's ~27 HINCRBYs per window beside the flush's.)"""
        now = time.monotonic()
        busy = bool(self._members) or now - self._last_record < self.every_s
        self._last_record = now
        return not busy

    def added(self, member: str, incs: list[Increment], expiries: list[Expiry]) -> None:
        """A script left this entry in the pending hash under ``member``: apply it with the next flush."""
        if member in self._ids:
            return
        self._ids.add(member)
        self._members.append((member, incs, expiries))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="routeq-aggregates")

    async def _run(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(self.every_s)
            rounds += 1
            try:
                if rounds % SWEEP_EVERY == 0:
                    await self.adopt()
                await self.flush()
            except RedisError as e:  # kept in memory and in the pending hash: the next flush retries
                log.warning("aggregates flush failed (%s); %d job(s) retried next time", e, len(self))

    async def adopt(self) -> int:
        """Take on entries of the pending hash this process does not know of: left by a write re-sent
        after a lost reply (its script said "already written"). Returns how many."""
        if int(await self._redis.hlen(self.key)) <= len(self._members):  # type: ignore[misc]
            return 0
        got = 0
        for raw_member, raw_entry in (await self._redis.hgetall(self.key)).items():  # type: ignore[misc]
            member = raw_member.decode()
            if member not in self._ids:
                self.added(member, *parse_entry(raw_entry.decode()))
                got += 1
        return got

    async def flush(self) -> int:
        """Apply what was recorded before this call; returns how many members it applied.

        Members recorded while its script calls are in flight wait for the next flush: draining until
        empty kept a busy process flushing back to back (a flush every ~20 ms, each with its ~30
        HINCRBYs), not once per ``every_s``."""
        applied = 0
        async with self._lock:
            todo = len(self._members)
            while todo > 0:
                part = self._members[: min(todo, MAX_MEMBERS)]
                todo -= len(part)
                applied += int(await self._script(keys=[self.key], args=self._args(part)))
                del self._members[: len(part)]
                self._ids.difference_update(m[0] for m in part)
        return applied

    @staticmethod
    def _args(part: list[tuple[str, list[Increment], list[Expiry]]]) -> list[str | int]:
        sums: dict[tuple[str, str], int] = {}
        expiries: dict[str, int] = {}
        for _, incs, exps in part:
            for key, field, v in incs:
                sums[(key, field)] = sums.get((key, field), 0) + v
            for key, ms in exps:
                expiries[key] = max(ms, expiries.get(key, 0))
        args: list[str | int] = [len(part), *(m[0] for m in part)]
        for key, ms in expiries.items():
            args += [key, ms]
        args.append("|")
        for (key, field), v in sums.items():
            if v:
                args += [key, field, v]
        return args

    async def close(self) -> None:
        """Stop the timer and flush what is left (what cannot be flushed stays for the reaper)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        try:
            await self.flush()
        except RedisError as e:
            log.warning(
                "aggregates of %d job(s) not flushed at exit (%s): applied at deregistering", len(self), e
            )
