"""An intake job refused for want of a slot joins a short line (TierGate.try_admit_or_wait) and is handed the
next free slot by a release, within milliseconds; a long line, or a cooldown, refuses it at once (it parks).
Against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from jobs.keys import Keys
from jobs.settings import Settings, TierLimits
from jobs.tiers import Tier
from worker.fleet.admission import Admission, Refusal
from worker.fleet.tier_gate import TierGate

T = Tier.sonnet
KEYS = Keys("lj")


@pytest.fixture
async def two_gates(redis_url: str) -> AsyncIterator[tuple[TierGate, TierGate, Redis]]:
    s = Settings(
        _env_file=None,  # type: ignore[call-arg]
        key_prefix="lj",
        limits={Tier.haiku: TierLimits(), T: TierLimits(concurrency=1), Tier.opus: TierLimits()},
    )
    clients = [Redis.from_url(redis_url) for _ in range(3)]
    # Long polls: a waiter admitted quickly was handed its slot, not found by a re-try.
    gates = [TierGate(c, KEYS, s, owner=f"p{i}", line_poll_s=5.0) for i, c in enumerate(clients[:2])]
    for g in gates:
        await g.start()
    yield gates[0], gates[1], clients[2]
    for g in gates:
        await g.close()
    for c in clients:
        await c.aclose()


async def test_a_refused_newcomer_waits_in_a_short_line_and_gets_the_next_slot(
    two_gates: tuple[TierGate, TierGate, Redis],
) -> None:
    a, b, redis = two_gates
    held = await a.try_admit(T, 1, 1)
    assert isinstance(held, Admission)
    waiter = asyncio.create_task(b.try_admit_or_wait(T, 1, 1, line_below=4, timeout_s=10))
    while not await redis.zcard(KEYS.line(T)):
        await asyncio.sleep(0.005)
    assert not waiter.done()
    t0 = time.monotonic()
    await held.release(1, 1)
    got = await asyncio.wait_for(waiter, 2.0)
    assert isinstance(got, Admission) and got.waited_on == ("concurrency",)
    assert time.monotonic() - t0 < 1.0  # handed over by the release, not at a poll
    assert await redis.zrange(KEYS.leases(T), 0, -1) == [got.lease_id.encode()]
    assert await redis.zcard(KEYS.line(T)) == 0
    await got.release(1, 1)


async def test_a_long_line_refuses_a_newcomer_without_letting_it_join(
    two_gates: tuple[TierGate, TierGate, Redis],
) -> None:
    a, b, redis = two_gates
    held = await a.try_admit(T, 1, 1)
    assert isinstance(held, Admission)
    first = asyncio.create_task(b.admit(T, 1, 1, timeout_s=10))
    while not await redis.zcard(KEYS.line(T)):
        await asyncio.sleep(0.005)
    got = await a.try_admit_or_wait(T, 1, 1, line_below=1, timeout_s=10)
    assert isinstance(got, Refusal) and got.reason == "concurrency"
    assert await redis.zcard(KEYS.line(T)) == 1  # only the waiter that was there
    await held.release(1, 1)
    adm = await asyncio.wait_for(first, 2.0)
    await adm.release(1, 1)


async def test_a_cooldown_refuses_a_newcomer_at_once(two_gates: tuple[TierGate, TierGate, Redis]) -> None:
    a, b, redis = two_gates
    await a.cooldown(T, 5.0, "test")
    got = await b.try_admit_or_wait(T, 1, 1, line_below=10, timeout_s=10)
    assert isinstance(got, Refusal) and got.reason == "cooldown"
    assert await redis.zcard(KEYS.line(T)) == 0
