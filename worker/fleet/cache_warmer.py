"""Cache warming across the fleet: one job writes a cold prefix, the others wait for it."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from jobs.keys import Keys
from worker.fleet.redis_scripts import Scripts, WriteBatch

WarmKind = Literal["warm", "leader", "follower", "timeout"]


@dataclass(frozen=True, slots=True)
class WarmDecision:
    """``warm``: go, expect a read. ``leader``: go first, then :meth:`CacheWarmer.mark_warm` (or
    :meth:`CacheWarmer.abandon` on failure) with ``token``. ``follower``: another job is writing the
    prefix, :meth:`CacheWarmer.wait_warm`. ``timeout``: waited long enough, go uncoordinated."""

    kind: WarmKind
    prefix_hash: str
    token: str | None = None


class CacheWarmer:
    """One write per prefix per TTL window across processes.

    The API can serve an entry only once the first response that wrote it has started, so N concurrent
    requests on a cold prefix would all pay a write. The first claimant takes a lock (PX-bounded, so a
    dead holder frees it); others wait for the warm marker, whose PX mirrors the cache TTL and is
    refreshed on each use, as the API refreshes the entry on a hit. Followers poll (cheap: one EVALSHA
    per ``poll_s``) and never wait past their timeout or past the lock's expiry.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        wait_s: float,
        *,
        lock_ttl_s: float | None = None,
        poll_s: float = 0.05,
    ) -> None:
        self._redis = redis
        self._scripts = Scripts(redis)
        self._keys = keys
        self.wait_s = wait_s
        # The lock must outlive the leader's call up to its first response; wait_s is the same horizon.
        self.lock_ttl_s = lock_ttl_s if lock_ttl_s is not None else wait_s
        self.poll_s = poll_s
        self._held: dict[str, str] = {}

    def _ks(self, h: str) -> list[str]:
        return [self._keys.cache_warm(h), self._keys.cache_warming(h)]

    async def claim(self, prefix_hash: str, ttl_s: float) -> WarmDecision:
        token = uuid.uuid4().hex
        raw = await self._scripts["cache_claim"](
            keys=self._ks(prefix_hash), args=[_ms(ttl_s), token, _ms(self.lock_ttl_s)]
        )
        kind = raw.decode() if isinstance(raw, bytes) else str(raw)
        if kind == "leader":
            self._held[prefix_hash] = token
            return WarmDecision("leader", prefix_hash, token)
        if kind == "warm":
            return WarmDecision("warm", prefix_hash)
        return WarmDecision("follower", prefix_hash)

    def _take_token(self, prefix_hash: str, token: str | None) -> str | None:
        """The lock token to release: the given one, else the one this instance's last claim won."""
        if token is None:
            return self._held.pop(prefix_hash, None)
        if self._held.get(prefix_hash) == token:
            del self._held[prefix_hash]
        return token

    async def mark_warm(
        self, prefix_hash: str, ttl_s: float, *, token: str | None = None, age_s: float = 0.0
    ) -> None:
        """The prefix is cached (a response has started or arrived): set/refresh the marker, free our lock.

        Call it after every successful call that wrote or read the prefix, leader or not, to mirror the
        API's TTL refresh on hits. ``age_s``: seconds since the request was sent; the API started the
        entry's TTL then, so the marker must not outlive it.
        """
        batch = WriteBatch(self._redis)
        self.mark_warm_into(batch, prefix_hash, ttl_s, token=token, age_s=age_s)
        await batch.execute()

    def mark_warm_into(
        self,
        batch: WriteBatch,
        prefix_hash: str,
        ttl_s: float,
        *,
        token: str | None = None,
        age_s: float = 0.0,
    ) -> None:
        """:meth:`mark_warm` queued in ``batch`` (setting the marker and freeing our lock are idempotent)."""
        tok = self._take_token(prefix_hash, token) or ""
        batch.script(self._scripts["cache_mark"], self._ks(prefix_hash), [_ms(ttl_s - age_s), tok])

    async def abandon(self, prefix_hash: str, *, token: str | None = None) -> None:
        """The leader's call failed: free the lock at once so a follower can lead."""
        tok = self._take_token(prefix_hash, token)
        if tok:
            await self._scripts["cache_abandon"](keys=[self._keys.cache_warming(prefix_hash)], args=[tok])

    async def wait_warm(self, prefix_hash: str, timeout_s: float) -> bool:
        """True as soon as the marker appears; False once the lock is gone (leader failed or died:
        claim again to lead) or after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = int(await self._scripts["cache_poll"](keys=self._ks(prefix_hash), args=[]))
            if state == 1:
                return True
            left = deadline - time.monotonic()
            if state == -1 or left <= 0:
                return False
            await asyncio.sleep(min(self.poll_s, left))

    async def acquire(self, prefix_hash: str, ttl_s: float, timeout_s: float | None = None) -> WarmDecision:
        """claim, and while a follower, wait (re-claiming when a leader goes away), up to ``timeout_s``
        (default ``wait_s``). Never returns ``follower``."""
        deadline = time.monotonic() + (self.wait_s if timeout_s is None else timeout_s)
        while True:
            d = await self.claim(prefix_hash, ttl_s)
            if d.kind != "follower":
                return d
            left = deadline - time.monotonic()
            if left <= 0:
                return WarmDecision("timeout", prefix_hash)
            if await self.wait_warm(prefix_hash, left):
                return WarmDecision("warm", prefix_hash)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))
