"""Prompt caching, as the API bills it.

``plan`` decides a request's split at arrival: the longest live cached breakpoint prefix is read; the
tokens from there to the last breakpoint whose prefix reaches the model's minimum are written (each
stretch billed at the TTL of the breakpoint that closes it); the rest is plain input. ``commit`` makes
the writes visible and refreshes the hit; the server calls it only once the response has *started*
(after the time to first token), so requests that arrive while a write is in flight all miss and all
pay for a write, as on the real API.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.sandbox.mock_api.config import Clock
from worker.sandbox.mock_api.request import Breakpoint

_PURGE_EVERY = 50_000


@dataclass(frozen=True, slots=True)
class CachePlan:
    read: int = 0
    write_5m: int = 0
    write_1h: int = 0
    hit: Breakpoint | None = None
    writes: tuple[Breakpoint, ...] = field(default_factory=tuple)

    @property
    def write(self) -> int:
        return self.write_5m + self.write_1h


NO_CACHE = CachePlan()


def split_writes(eligible: list[Breakpoint], read: int) -> tuple[int, int, tuple[Breakpoint, ...]]:
    """Tokens written per TTL and the breakpoints to store, for prefixes beyond ``read`` tokens."""
    w5 = w1 = 0
    start = read
    writes: list[Breakpoint] = []
    for bp in eligible:
        if bp.end <= read:
            continue
        n = bp.end - start
        if bp.ttl == "1h":
            w1 += n
        else:
            w5 += n
        start = bp.end
        writes.append(bp)
    return w5, w1, tuple(writes)


class PromptCache:
    """Live prefixes per (model, prefix digest) -> expiry on the injected clock."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._expiry: dict[tuple[str, bytes], float] = {}
        self._since_purge = 0

    def clear(self) -> None:
        self._expiry.clear()

    def __len__(self) -> int:
        return len(self._expiry)

    def plan(self, model: str, breakpoints: list[Breakpoint], min_tokens: int) -> CachePlan:
        if not breakpoints:
            return NO_CACHE
        eligible = [bp for bp in breakpoints if bp.end >= min_tokens]
        if not eligible:
            return NO_CACHE
        now = self._clock()
        hit: Breakpoint | None = None
        for bp in reversed(eligible):
            exp = self._expiry.get((model, bp.key))
            if exp is not None and exp > now:
                hit = bp
                break
        read = hit.end if hit else 0
        w5, w1, writes = split_writes(eligible, read)
        return CachePlan(read=read, write_5m=w5, write_1h=w1, hit=hit, writes=writes)

    def commit(self, model: str, plan: CachePlan) -> None:
        if plan is NO_CACHE:
            return
        now = self._clock()
        for bp in (plan.hit, *plan.writes):
            if bp is None:
                continue
            key = (model, bp.key)
            exp = now + bp.ttl_s
            if self._expiry.get(key, 0.0) < exp:
                self._expiry[key] = exp
        self._since_purge += len(plan.writes)
        if self._since_purge >= _PURGE_EVERY:
            self._since_purge = 0
            self._expiry = {k: v for k, v in self._expiry.items() if v > now}
