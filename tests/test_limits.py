"""Fleet-wide limits (worker/fleet/tier_gate.py) against a real redis-server: leases, buckets, cooldowns,
config."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from jobs.keys import Keys
from jobs.results import Cost, Usage
from jobs.settings import Settings, TierLimits
from jobs.tiers import Tier
from tests.helpers import command_calls
from worker.cli.limits import add_limits_commands
from worker.fleet.admission import Admission, AdmissionTimeout, Refusal
from worker.fleet.limit_config import limits_detail, reset_limits, set_limits
from worker.fleet.recovery import Recovery, new_owner_token
from worker.fleet.redis_scripts import WriteBatch
from worker.fleet.tier_gate import TierGate
from worker.pipeline.attempt import AttemptScope
from worker.pipeline.call import CallResult
from worker.runtime import owner_id

T = Tier.sonnet
KEYS = Keys("t")


def make_settings(
    ttl: float = 5.0, handover: bool = True, handover_slack_ms: float = 250.0, **limits: Any
) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        key_prefix="t",
        lease_ttl_s=ttl,
        local_handover=handover,
        local_handover_slack_ms=handover_slack_ms,
        limits={Tier.haiku: TierLimits(), T: TierLimits(**limits), Tier.opus: TierLimits()},
    )


GateFactory = Callable[..., Awaitable[TierGate]]


@pytest.fixture
async def gates(redis_url: str) -> AsyncIterator[GateFactory]:
    """Gates with their own Redis clients, as separate worker processes would have."""
    made: list[tuple[TierGate, Redis]] = []

    async def make(settings: Settings, start: bool = True, **kw: Any) -> TierGate:
        r = Redis.from_url(redis_url)
        gate = TierGate(r, KEYS, settings, owner=f"w{len(made)}", **kw)
        if start:
            await gate.start()
        made.append((gate, r))
        return gate

    yield make
    for gate, r in made:
        await gate.close()
        await r.aclose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    r = Redis.from_url(redis_url)
    yield r
    await r.aclose()


async def admitted(x: Admission | Refusal) -> Admission:
    assert isinstance(x, Admission), x
    return x


# Counts holders as seen from inside the critical section, and the highest count ever seen.
PROBE = """
local v = redis.call('INCR', KEYS[1])
if v > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], v) end
return v
"""


# --- concurrency ---------------------------------------------------------------------------------------


async def test_concurrency_never_exceeded_in_process(gates: GateFactory, redis: Redis) -> None:
    settings = make_settings(concurrency=3)
    gs = [await gates(settings) for _ in range(3)]
    probe = redis.register_script(PROBE)

    async def one(gate: TierGate) -> None:
        adm = await gate.admit(T, 10, 10, timeout_s=10)
        await probe(keys=["probe", "probe:max"])
        await asyncio.sleep(0.005)
        await redis.decr("probe")
        await adm.release(10, 10)

    await asyncio.gather(*(one(gs[i % 3]) for i in range(36)))
    assert int(await redis.get("probe:max") or 0) == 3  # reached (contended) but never exceeded
    assert sum(g.handovers[T] for g in gs) > 0  # some slots went to a waiter of the same process
    assert await redis.zcard(KEYS.leases(T)) == 0


WORKER_SCRIPT = r"""
import asyncio, json, os, sys
from redis.asyncio import Redis
from jobs.keys import Keys
from jobs.settings import Settings, TierLimits
from jobs.tiers import Tier
from worker.fleet.tier_gate import TierGate

url, mode, limit, ttl = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
T = Tier.sonnet
limits = {Tier.haiku: TierLimits(), T: TierLimits(concurrency=limit), Tier.opus: TierLimits()}
settings = Settings(_env_file=None, key_prefix="t", lease_ttl_s=ttl, limits=limits)
PROBE = '''
local v = redis.call('INCR', KEYS[1])
if v > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], v) end
return v
'''

async def main():
    r = Redis.from_url(url)
    gate = TierGate(r, Keys("t"), settings, owner=f"proc{mode}-{os.getpid()}")  # one identity per process
    await gate.start()
    if mode == "hold":
        await gate.admit(T, 1, 1)
        print("held", flush=True)
        await asyncio.sleep(60)
        return
    probe = r.register_script(PROBE)
    await r.incr("ready")
    while int(await r.get("ready")) < int(sys.argv[5]):
        await asyncio.sleep(0.01)

    async def one():
        for _ in range(5):
            adm = await gate.admit(T, 1, 1, timeout_s=20)
            await probe(keys=["probe", "probe:max"])
            await asyncio.sleep(0.01)
            await r.decr("probe")
            await adm.release(1, 1)
            await r.incr("done")

    await asyncio.gather(*(one() for _ in range(6)))
    await r.incrby("handovers", gate.handovers[T])
    await gate.close()
    await r.aclose()

asyncio.run(main())
"""


def spawn(redis_url: str, mode: str, limit: int, ttl: float, n: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, redis_url, mode, str(limit), str(ttl), str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )


async def test_concurrency_never_exceeded_across_processes(redis_url: str, redis: Redis) -> None:
    procs = [spawn(redis_url, "run", limit=4, ttl=5, n=3) for _ in range(3)]
    for p in procs:
        assert await asyncio.to_thread(p.wait, 30) == 0
    assert int(await redis.get("done") or 0) == 3 * 6 * 5
    assert int(await redis.get("probe:max") or 0) == 4
    assert int(await redis.get("handovers") or 0) > 0
    assert await redis.zcard(KEYS.leases(T)) == 0


async def test_sigkilled_holder_slot_returns_within_ttl(redis_url: str, gates: GateFactory) -> None:
    ttl = 1.0
    holder = spawn(redis_url, "hold", limit=1, ttl=ttl)
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 20)
        assert line.strip() == "held"
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
        killed = time.monotonic()
        gate = await gates(make_settings(ttl=ttl, concurrency=1))
        refused = await gate.try_admit(T, 1, 1)
        assert isinstance(refused, Refusal) and refused.reason == "concurrency"  # the dead lease still counts
        adm = await gate.admit(T, 1, 1, timeout_s=5)
        back_after = time.monotonic() - killed
        assert back_after < ttl + 0.3, back_after
        assert "concurrency" in adm.waited_on
        await adm.release(1, 1)
    finally:
        if holder.poll() is None:
            holder.kill()


async def test_renewals_keep_a_long_calls_lease(gates: GateFactory) -> None:
    settings = make_settings(ttl=0.5, concurrency=1)
    a, b = await gates(settings), await gates(settings)
    adm = await admitted(await a.try_admit(T, 1, 1))
    deadline = time.monotonic() + 1.5  # three TTLs
    while time.monotonic() < deadline:
        r = await b.try_admit(T, 1, 1)
        assert isinstance(r, Refusal) and r.reason == "concurrency"
        await asyncio.sleep(0.05)
    assert not adm.lost.is_set()
    await adm.release(1, 1)
    await (await admitted(await b.try_admit(T, 1, 1))).release(1, 1)


async def test_lost_lease_is_noticed(gates: GateFactory, redis: Redis) -> None:
    gate = await gates(make_settings(ttl=0.3, concurrency=1))
    adm = await admitted(await gate.try_admit(T, 1, 1))
    await redis.zrem(KEYS.leases(T), adm.lease_id)  # as if reaped after a long stall
    await asyncio.wait_for(adm.lost.wait(), 1.0)
    await adm.release(1, 1)  # still settles and returns cleanly


async def test_release_exactly_once(gates: GateFactory, redis: Redis) -> None:
    gate = await gates(make_settings(concurrency=1, otpm=1000))
    other = await gates(make_settings(concurrency=1, otpm=1000))  # another process: its grant is published
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(
        KEYS.limits_channel, KEYS.grants_channel(gate.owner), KEYS.grants_channel(other.owner)
    )

    async def events() -> list[bytes]:
        msgs = []
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            m = await pubsub.get_message(timeout=0.05)
            if m:
                msgs.append(m["data"])
        return msgs

    async with await gate.admit(T, 0, 100) as adm:
        waiter = asyncio.create_task(other.admit(T, 0, 10))
        while not await redis.zcard(KEYS.line(T)):
            await asyncio.sleep(0.01)
        await adm.release(0, 40)  # refunds 60; the slot goes to the waiter
        await adm.release(0, 40)
        await adm.abandon()
    # context exit abandons too: all no-ops after the first release
    second = await asyncio.wait_for(waiter, 2.0)
    assert await redis.zrange(KEYS.leases(T), 0, -1) == [second.lease_id.encode()]
    assert await events() == [f"grant:{T}:{second.lease_id}".encode()]  # handed over once
    assert await redis.zcard(KEYS.line(T)) == 0
    await second.release(0, 10)
    assert await redis.zcard(KEYS.leases(T)) == 0
    assert await events() == []  # nobody waits: nothing to announce
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    tokens = float(await redis.hget(KEYS.bucket(T, "otpm"), "tokens"))  # type: ignore[misc]
    assert tokens == pytest.approx(950, abs=5)  # charged 40 + 10 once each, not 40 three times


async def test_an_uncapped_release_with_nobody_waiting_reads_no_clock(
    gates: GateFactory, redis: Redis
) -> None:
    # The common release (no rate limit on the tier, an empty line) is a few commands of every job.
    gate = await gates(make_settings(concurrency=4))

    adm = await gate.admit(T, 100, 100)
    before = await command_calls(redis, "time")
    await adm.release(80, 40)
    assert await command_calls(redis, "time") == before
    assert await redis.zcard(KEYS.leases(T)) == 0


async def test_admission_learns_a_cooldown_from_its_read_of_the_limits(
    gates: GateFactory, redis: Redis
) -> None:
    # Every admission reads the tier's limits; the cooldown's end sits beside them, so the cooldown key's
    # TTL (a command of every admission and of every grant) is not read on the way.
    gate = await gates(make_settings(concurrency=4))

    before = await command_calls(redis, "pttl")
    await (await admitted(await gate.try_admit(T, 1, 1))).release(1, 1)
    assert await command_calls(redis, "pttl") == before
    await gate.cooldown(T, 0.3, "overloaded")
    refused = await gate.try_admit(T, 1, 1)
    assert isinstance(refused, Refusal) and refused.reason == "cooldown"
    assert 0.2 < refused.retry_in_s <= 0.3
    assert await gate.cooldown_remaining(T) == pytest.approx(0.3, abs=0.1)  # the key says the same
    await asyncio.sleep(0.35)
    await (await admitted(await gate.try_admit(T, 1, 1))).release(1, 1)


# --- token buckets -------------------------------------------------------------------------------------


async def bucket(redis: Redis, kind: str) -> float:
    return float(await redis.hget(KEYS.bucket(T, kind), "tokens"))  # type: ignore[misc]


async def test_token_buckets_reserve_settle_and_cache_reads(gates: GateFactory, redis: Redis) -> None:
    gate = await gates(make_settings(concurrency=10, rpm=3, itpm=600, otpm=1000))
    adm = await admitted(await gate.try_admit(T, 500, 100))
    assert await bucket(redis, "itpm") == pytest.approx(100, abs=3)
    assert await bucket(redis, "rpm") == pytest.approx(2, abs=0.01)

    r = await gate.try_admit(T, 200, 100)
    assert isinstance(r, Refusal) and r.reason == "itpm"
    assert r.retry_in_s == pytest.approx(100 / 600 * 60, abs=0.5)  # 100 short at 10 tokens/s
    assert await bucket(redis, "rpm") == pytest.approx(2, abs=0.01)  # all-or-nothing: rpm untouched

    # 50 uncached + 50 written count; 10 000 read from cache do not: 400 of 500 refunded; otpm charged +800.
    await adm.release(50, 900, cache_read_tokens=10_000, cache_write_tokens=50)
    assert await bucket(redis, "itpm") == pytest.approx(500, abs=3)
    assert await bucket(redis, "otpm") == pytest.approx(100, abs=3)
    r = await gate.try_admit(T, 100, 200)
    assert isinstance(r, Refusal) and r.reason == "otpm"

    a2 = await admitted(await gate.try_admit(T, 100, 50))
    a3 = await admitted(await gate.try_admit(T, 100, 50))
    r = await gate.try_admit(T, 1, 1)
    assert isinstance(r, Refusal) and r.reason == "rpm"
    assert r.retry_in_s == pytest.approx(20, abs=0.5)  # one request at 3/min
    for a in (a2, a3):
        await a.release(100, 50)


async def test_bucket_refills_continuously_and_oversized_requests_go_into_debt(
    gates: GateFactory, redis: Redis
) -> None:
    gate = await gates(make_settings(concurrency=10, itpm=6000))  # 100 tokens/s

    async def take(itpm: int) -> Admission | Refusal:
        got = await gate.try_admit(T, itpm, 0)
        if isinstance(got, Admission):
            await got.abandon()  # the reservation stays charged
        return got

    assert isinstance(await take(10), Admission)
    await asyncio.sleep(0.3)  # would refill 30: capped at capacity
    assert isinstance(await take(1), Admission)
    assert await bucket(redis, "itpm") == pytest.approx(5999, abs=0.5)
    await redis.delete(KEYS.bucket(T, "itpm"))
    assert isinstance(await take(6000), Admission)
    assert await bucket(redis, "itpm") == pytest.approx(0, abs=2)
    await asyncio.sleep(0.3)
    got = await take(100)
    assert isinstance(got, Refusal) and got.reason == "itpm"
    assert got.retry_in_s == pytest.approx(0.7, abs=0.15)
    await redis.delete(KEYS.bucket(T, "itpm"))  # full again
    assert isinstance(await take(9000), Admission)  # larger than capacity: admitted when full
    assert await bucket(redis, "itpm") == pytest.approx(-3000, abs=2)


# --- cooldown ------------------------------------------------------------------------------------------


async def test_cooldown_is_shared_honoured_and_never_shortened(gates: GateFactory) -> None:
    settings = make_settings(concurrency=4)
    a, b = await gates(settings), await gates(settings)
    await a.cooldown(T, 2.0, "429 from API")
    r = await b.try_admit(T, 1, 1)
    assert isinstance(r, Refusal) and r.reason == "cooldown"
    assert 1.8 < r.retry_in_s <= 2.0
    assert await a.cooldown(T, 0.2, "shorter") > 1.7  # not shortened
    assert await b.cooldown_remaining(T) > 1.7
    assert (await b.try_admit(Tier.haiku, 1, 1)).__class__ is Admission  # other tiers unaffected

    await a.cooldown(Tier.opus, 0.3, "529")
    adm = await b.admit(Tier.opus, 1, 1, timeout_s=2)
    assert adm.waited_on == ("cooldown",) and 250 <= adm.wait_ms < 600
    with pytest.raises(AdmissionTimeout) as e:
        await b.admit(T, 1, 1, timeout_s=0.2)
    assert e.value.last is not None and e.value.last.reason == "cooldown"


# --- runtime limits ------------------------------------------------------------------------------------


async def test_runtime_limit_change_wakes_a_waiting_admit(gates: GateFactory, redis: Redis) -> None:
    settings = make_settings(concurrency=1)
    a, b = await gates(settings), await gates(settings, max_poll_s=5.0)  # only the event can wake b soon
    held = await admitted(await a.try_admit(T, 1, 1))
    waiter = asyncio.create_task(b.admit(T, 1, 1, timeout_s=5))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    t0 = time.monotonic()
    await set_limits(redis, KEYS, T, concurrency=2)
    adm = await asyncio.wait_for(waiter, 1.0)
    assert time.monotonic() - t0 < 0.5  # the event, not the 5 s poll
    assert adm.waited_on == ("concurrency",)
    await adm.release(1, 1)
    await held.release(1, 1)


async def test_runtime_limit_change_applies_within_a_second_without_events(
    gates: GateFactory, redis: Redis
) -> None:
    gate = await gates(make_settings(concurrency=5, rpm=1), start=False)  # polling only
    await (await admitted(await gate.try_admit(T, 1, 1))).release(1, 1)
    waiter = asyncio.create_task(gate.admit(T, 1, 1, timeout_s=5))
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    await set_limits(redis, KEYS, T, rpm=0)  # unlimited
    adm = await asyncio.wait_for(waiter, 2.0)
    assert time.monotonic() - t0 < 1.0
    assert adm.waited_on == ("rpm",)
    await adm.release(1, 1)


async def effective(redis: Redis, settings: Settings) -> dict[str, int | None]:
    return {k: v.value for k, v in (await limits_detail(redis, KEYS, settings))[T].items()}


async def test_get_set_reset_limits(redis: Redis) -> None:
    settings = make_settings(concurrency=3, rpm=50)
    assert await effective(redis, settings) == {"concurrency": 3, "rpm": 50, "itpm": None, "otpm": None}
    written = await set_limits(redis, KEYS, T, concurrency=7, rpm=0, itpm=1000, otpm="none")
    assert written == {
        "sonnet:concurrency": "7",
        "sonnet:rpm": "none",
        "sonnet:itpm": "1000",
        "sonnet:otpm": "none",
    }
    assert await effective(redis, settings) == {"concurrency": 7, "rpm": None, "itpm": 1000, "otpm": None}
    detail = await limits_detail(redis, KEYS, settings)
    assert detail[T]["rpm"].source == "runtime" and detail[Tier.opus]["rpm"].source == "settings"
    with pytest.raises(ValueError):
        await set_limits(redis, KEYS, T, concurrency=0)
    await reset_limits(redis, KEYS, T)
    assert await effective(redis, settings) == {"concurrency": 3, "rpm": 50, "itpm": None, "otpm": None}


# --- wake-up latency -----------------------------------------------------------------------------------


async def test_waiter_gets_a_released_slot_quickly(gates: GateFactory) -> None:
    settings = make_settings(concurrency=1)
    a, b = await gates(settings), await gates(settings, max_poll_s=5.0)  # the pubsub event must do it
    latencies = []
    for _ in range(10):
        held = await admitted(await a.try_admit(T, 1, 1))
        got_at: list[float] = []

        async def wait(b: TierGate = b, got_at: list[float] = got_at) -> Admission:
            adm = await b.admit(T, 1, 1, timeout_s=5)
            got_at.append(time.perf_counter())
            return adm

        waiter = asyncio.create_task(wait())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        t0 = time.perf_counter()
        await held.release(1, 1)
        adm = await waiter
        latencies.append(got_at[0] - t0)
        await adm.release(1, 1)
    print(
        f"wake-up latency ms: median {statistics.median(latencies) * 1e3:.2f} max {max(latencies) * 1e3:.2f}"
    )
    assert statistics.median(latencies) < 0.03
    assert max(latencies) < 0.1


async def test_a_granted_waiter_resumes_on_the_next_turn_of_the_event_loop(gates: GateFactory) -> None:
    # Each turn of a busy worker's event loop takes milliseconds while the granted slot sits idle: the
    # grant must reach the waiting admit in one turn (a wait_for over a shield took three).
    settings = make_settings(concurrency=1)
    gate = await gates(settings)
    held = await admitted(await gate.try_admit(T, 1, 1))
    waiter = asyncio.create_task(gate.admit(T, 1, 1, timeout_s=5))
    while not gate.waiting(T):
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # its try was refused: it waits for the wake
    await held.release(1, 1)  # the grant comes back in the reply, which sets the waiter's wake
    turns = 0
    while not waiter.done():
        await asyncio.sleep(0)
        turns += 1
    assert turns <= 1
    await (await waiter).release(1, 1)


async def settle_paid_answer(gate: TierGate, held: Admission) -> WriteBatch:
    """An attempt scope holding ``held`` settled after a paid answer; returns the record's batch, not sent."""
    scope = AttemptScope(cast(Any, SimpleNamespace(gate=gate, redis=gate.redis)))
    scope.admitted(held)
    answer = CallResult("ok", "end_turn", Usage(input_tokens=1, output_tokens=1), "m", "msg", None, 200)
    record = WriteBatch(gate.redis)
    await scope.settle_into(record, answer, Cost(), cast(Any, None), None)
    return record


async def test_a_paid_call_hands_its_slot_on_before_its_answer_is_checked_and_recorded(
    gates: GateFactory, redis: Redis
) -> None:
    # The API is done with a request when its answer arrives; the answer's checks and record take a few
    # ms on a busy worker, and the next in line must not wait for them (it waited for the record's trip).
    settings = make_settings(concurrency=1)
    a, b = await gates(settings), await gates(settings)
    held = await admitted(await a.try_admit(T, 1, 1))
    waiter = asyncio.create_task(b.admit(T, 1, 1, timeout_s=5))
    while not await redis.zcard(KEYS.line(T)):
        await asyncio.sleep(0.005)
    record = await settle_paid_answer(a, held)
    granted = await asyncio.wait_for(waiter, 2)
    assert await redis.zrange(KEYS.leases(T), 0, -1) == [granted.lease_id.encode()]
    await record.execute()
    await granted.release(1, 1)


async def test_a_slot_release_that_cannot_reach_redis_goes_with_the_record(
    gates: GateFactory, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(concurrency=1)
    a = await gates(settings)
    held = await admitted(await a.try_admit(T, 1, 1))
    real, sent = WriteBatch.execute, []

    async def first_lost(self: WriteBatch) -> None:
        sent.append(self)
        if len(sent) == 1:
            raise RedisConnectionError("connection reset")
        await real(self)

    monkeypatch.setattr(WriteBatch, "execute", first_lost)
    record = await settle_paid_answer(a, held)
    assert await redis.zcard(KEYS.leases(T)) == 1  # not freed yet, and not forgotten:
    await record.execute()
    assert await redis.zcard(KEYS.leases(T)) == 0


# --- the line: first come, first served across processes ------------------------------------------------


async def test_line_serves_waiters_of_every_process_in_arrival_order(
    gates: GateFactory, redis: Redis
) -> None:
    # No slack: a process's own waiter never goes ahead of an earlier one (see the handover tests below).
    settings = make_settings(concurrency=1, handover_slack_ms=0)
    a, b, c = await gates(settings), await gates(settings), await gates(settings)
    held = await admitted(await a.try_admit(T, 1, 1))
    order: list[str] = []

    async def wait(gate: TierGate, name: str) -> Admission:
        adm = await gate.admit(T, 1, 1, timeout_s=10)
        order.append(name)
        await asyncio.sleep(0.02)  # hold it a moment, then pass it on
        await adm.release(1, 1)
        return adm

    tasks = []
    for gate, name in [(b, "b1"), (c, "c1"), (a, "a1"), (b, "b2"), (c, "c2")]:
        tasks.append(asyncio.create_task(wait(gate, name)))
        while await redis.zcard(KEYS.line(T)) < len(tasks):  # joined the line before the next one comes
            await asyncio.sleep(0.005)
    # a newcomer is refused while others wait, even from a process with nobody waiting
    d = await gates(settings)
    refused = await d.try_admit(T, 1, 1)
    assert isinstance(refused, Refusal) and refused.reason in ("queued", "concurrency")
    await held.release(1, 1)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert order == ["b1", "c1", "a1", "b2", "c2"]
    assert await redis.zcard(KEYS.line(T)) == 0 and await redis.zcard(KEYS.leases(T)) == 0


async def test_a_line_place_carries_what_its_waiter_asks_and_a_release_grants_it(
    gates: GateFactory, redis: Redis
) -> None:
    gate, other = await gates(make_settings(concurrency=1)), await gates(make_settings(concurrency=1))
    held = await admitted(await gate.try_admit(T, 1, 1))
    waiter = asyncio.create_task(other.admit(T, 2, 3, timeout_s=5))
    while not await redis.zcard(KEYS.line(T)):
        await asyncio.sleep(0.005)
    # the place says who waits and what it asks of the buckets: a grant needs no other read
    assert await redis.zrange(KEYS.line(T), 0, -1) == [f"{next(iter(other._waiting))}|2|3".encode()]
    await held.release(1, 1)
    adm = await asyncio.wait_for(waiter, 5)
    assert await redis.zcard(KEYS.line(T)) == 0
    await adm.release(2, 3)


async def test_a_line_place_not_of_the_member_form_is_dropped_at_the_head(
    gates: GateFactory, redis: Redis
) -> None:
    settings = make_settings(concurrency=1)
    a, b = await gates(settings), await gates(settings)
    held = await admitted(await a.try_admit(T, 1, 1))
    await redis.zadd(KEYS.line(T), {"old-version:1": 0})  # before the waiter below: at the head
    waiter = asyncio.create_task(b.admit(T, 1, 1, timeout_s=5))
    while await redis.zcard(KEYS.line(T)) < 2:
        await asyncio.sleep(0.005)
    await held.release(1, 1)
    adm = await asyncio.wait_for(waiter, 5)
    assert adm.wait_ms < 1000  # handed the slot by the release, not found by a later poll
    assert await redis.zcard(KEYS.line(T)) == 0
    await adm.release(1, 1)


async def test_a_slot_granted_to_a_waiter_its_process_no_longer_has_is_handed_on_at_once(
    gates: GateFactory, redis: Redis
) -> None:
    settings = make_settings(concurrency=1)
    a, b, c = await gates(settings), await gates(settings), await gates(settings)
    held = await admitted(await a.try_admit(T, 1, 1))
    # b's waiter gave up and its withdrawal was lost: its place is still in the line, ahead of c's
    await redis.zadd(KEYS.line(T), {f"{b.owner}:gone|1|1": 0})
    waiter = asyncio.create_task(c.admit(T, 1, 1, timeout_s=5))
    while await redis.zcard(KEYS.line(T)) < 2:
        await asyncio.sleep(0.005)
    await held.release(1, 1)  # granted to the place b no longer has: b hands it on to c
    adm = await asyncio.wait_for(waiter, 5)
    assert adm.wait_ms < 1000
    assert await redis.zrange(KEYS.leases(T), 0, -1) == [adm.lease_id.encode()]
    await adm.release(1, 1)


async def test_a_slot_being_handed_on_at_shutdown_is_freed_before_close_returns(
    redis_url: str, gates: GateFactory, redis: Redis
) -> None:
    # A worker stopping (a rolling deploy) just as a slot is granted to a waiter it no longer has: the
    # slot must not stay held by the stopped process until its lease expires (30 s by default).
    settings = make_settings(concurrency=1)
    a = await gates(settings)
    rb = Redis.from_url(redis_url)
    b = TierGate(rb, KEYS, settings, owner="stopping")
    await b.start()
    held = await admitted(await a.try_admit(T, 1, 1))
    await redis.zadd(KEYS.line(T), {f"{b.owner}:gone|1|1": 0})
    await held.release(1, 1)  # granted to the place b no longer has
    async with asyncio.timeout(5):  # a hand-back that never starts fails here, not at the suite's timeout
        while not b._handing_back:
            await asyncio.sleep(0)
    await b.close()
    await rb.aclose()
    for task in list(b._handing_back):  # what the end of the worker's event loop does to what is left
        task.cancel()
    assert await redis.zcard(KEYS.leases(T)) == 0


async def test_a_grant_to_the_releasing_process_is_not_published(gates: GateFactory, redis: Redis) -> None:
    settings = make_settings(concurrency=1, handover=False)  # through the line (handovers: see below)
    a, b = await gates(settings), await gates(settings)
    held = await admitted(await a.try_admit(T, 1, 1))
    own = asyncio.create_task(a.admit(T, 1, 1, timeout_s=5))
    while not await redis.zcard(KEYS.line(T)):
        await asyncio.sleep(0.005)
    before = await command_calls(redis, "publish")
    await held.release(1, 1)  # the head is a's own waiter: woken from the reply
    mine = await asyncio.wait_for(own, 5)
    assert await command_calls(redis, "publish") == before
    theirs = asyncio.create_task(b.admit(T, 1, 1, timeout_s=5))
    while not await redis.zcard(KEYS.line(T)):
        await asyncio.sleep(0.005)
    await mine.release(1, 1)  # b's waiter: told on b's channel
    await (await asyncio.wait_for(theirs, 5)).release(1, 1)
    assert await command_calls(redis, "publish") == before + 1


async def test_a_waiter_that_gives_up_leaves_the_line_and_strands_no_slot(
    gates: GateFactory, redis: Redis
) -> None:
    settings = make_settings(concurrency=1)
    a, b = await gates(settings), await gates(settings)
    held = await admitted(await a.try_admit(T, 1, 1))
    with pytest.raises(AdmissionTimeout):
        await b.admit(T, 1, 1, timeout_s=0.3)
    assert await redis.zcard(KEYS.line(T)) == 0
    # cancelled at the moment its slot is granted: the slot goes on to the next waiter, not lost
    first = asyncio.create_task(b.admit(T, 1, 1))
    while not await redis.zcard(KEYS.line(T)):
        await asyncio.sleep(0.005)
    second = asyncio.create_task(a.admit(T, 1, 1, timeout_s=5))
    while await redis.zcard(KEYS.line(T)) < 2:
        await asyncio.sleep(0.005)
    await held.release(1, 1)  # granted to `first` ...
    first.cancel()  # ... which is cancelled before it can start
    with pytest.raises(asyncio.CancelledError):
        await first
    adm = await asyncio.wait_for(second, 5)
    assert await redis.zrange(KEYS.leases(T), 0, -1) == [adm.lease_id.encode()]
    await adm.release(1, 1)
    assert await redis.zcard(KEYS.leases(T)) == 0 and await redis.zcard(KEYS.line(T)) == 0


async def test_a_grant_whose_event_is_lost_is_found_by_the_next_try(gates: GateFactory, redis: Redis) -> None:
    settings = make_settings(concurrency=1)
    a = await gates(settings)
    b = await gates(settings, start=False, line_poll_s=0.2)  # no pubsub: never hears the grant
    held = await admitted(await a.try_admit(T, 1, 1))
    waiter = asyncio.create_task(b.admit(T, 1, 1, timeout_s=5))
    while not await redis.zcard(KEYS.line(T)):
        await asyncio.sleep(0.005)
    await held.release(1, 1)
    adm = await asyncio.wait_for(waiter, 2)
    assert "concurrency" in adm.waited_on
    assert await redis.zrange(KEYS.leases(T), 0, -1) == [adm.lease_id.encode()]  # one lease, not two
    await adm.release(1, 1)


# --- local handover: a freed slot goes to a waiter of the same process (worker/fleet/handover.py) ------


async def parked(gate: TierGate, n: int = 1) -> None:
    """Until ``n`` of the gate's waiters sit waiting for a wake (their join replies are in)."""
    while sum(1 for w in gate._waiting.values() if w.parked and w.joined_ms is not None) < n:
        await asyncio.sleep(0.005)


def answered(gate: TierGate, adm: Admission) -> WriteBatch:
    """``adm``'s release after an answer, queued and not yet sent."""
    batch = WriteBatch(gate.redis)
    adm.release_usage_into(batch, Usage(input_tokens=1, output_tokens=1))
    return batch


async def test_a_freed_slot_goes_to_a_waiter_of_the_same_process_before_redis_hears_of_it(
    gates: GateFactory, redis: Redis
) -> None:
    # Through the line, the slot reached the next caller in two hops between processes (release script,
    # then the grant's message), a few ms of a paid slot idle each time.
    a = await gates(make_settings(concurrency=1))
    held = await admitted(await a.try_admit(T, 1, 1))
    waiter = asyncio.create_task(a.admit(T, 1, 1, timeout_s=5))
    await parked(a)
    release = answered(a, held)
    got = await asyncio.wait_for(waiter, 1)  # before the release is sent
    assert got.lease_id == held.lease_id and a.handovers[T] == 1
    assert await redis.zcard(KEYS.line(T)) == 1
    await release.execute()  # its place leaves the line; the lease, still held, is renewed for it
    assert await redis.zcard(KEYS.line(T)) == 0
    assert await redis.zrange(KEYS.leases(T), 0, -1) == [held.lease_id.encode()]
    await got.release(1, 1)
    assert await redis.zcard(KEYS.leases(T)) == 0


@pytest.mark.parametrize("slack_ms, first", [(1000.0, "own"), (50.0, "other")])
async def test_a_local_handover_passes_a_waiter_of_another_process_only_within_the_slack(
    gates: GateFactory, redis: Redis, slack_ms: float, first: str
) -> None:
    settings = make_settings(concurrency=1, handover_slack_ms=slack_ms)
    a, b = await gates(settings), await gates(settings)
    held = await admitted(await a.try_admit(T, 1, 1))
    other = asyncio.create_task(b.admit(T, 1, 1, timeout_s=5))
    await parked(b)
    await asyncio.sleep(0.15)  # a's own waiter joins 150 ms after b's
    own = asyncio.create_task(a.admit(T, 1, 1, timeout_s=5))
    await parked(a)
    await answered(a, held).execute()
    done, _ = await asyncio.wait({own, other}, timeout=2, return_when=asyncio.FIRST_COMPLETED)
    assert done == {own if first == "own" else other}
    await done.pop().result().release(1, 1)
    for task in (own, other):
        if not task.done() or task in done:
            await (await asyncio.wait_for(task, 2)).release(1, 1)
    assert await redis.zcard(KEYS.leases(T)) == 0 and await redis.zcard(KEYS.line(T)) == 0


async def test_no_local_handover_while_the_tier_has_a_rate_limit(gates: GateFactory, redis: Redis) -> None:
    # A bucket must be asked before the call: the slot goes through the line's script.
    a = await gates(make_settings(concurrency=1, rpm=1000))
    held = await admitted(await a.try_admit(T, 1, 1))
    waiter = asyncio.create_task(a.admit(T, 1, 1, timeout_s=5))
    await parked(a)
    release = answered(a, held)
    await asyncio.sleep(0.05)
    assert not waiter.done() and a.handovers[T] == 0
    await release.execute()
    got = await asyncio.wait_for(waiter, 2)
    assert got.lease_id != held.lease_id
    await got.release(1, 1)


@pytest.mark.parametrize("event", ["cooldown", "lower limit"])
async def test_a_cooldown_or_a_lowered_limit_anywhere_stops_local_handovers_at_once(
    gates: GateFactory, redis: Redis, event: str
) -> None:
    settings = make_settings(concurrency=2)
    a, b = await gates(settings), await gates(settings)
    held = [await admitted(await a.try_admit(T, 1, 1)) for _ in range(2)]
    waiter = asyncio.create_task(a.admit(T, 1, 1, timeout_s=5))
    await parked(a)
    assert a._views[T].open
    if event == "cooldown":
        await b.cooldown(T, 0.3, "429 from another process")
    else:
        await set_limits(redis, KEYS, T, concurrency=1)
    while a._views[T].open:  # the event's message reaches a
        await asyncio.sleep(0.005)
    await parked(a)  # (a limit change wakes waiters to try again)
    await answered(a, held[0]).execute()
    await asyncio.sleep(0.05)
    assert a.handovers[T] == 0 and not waiter.done()
    if event == "lower limit":  # the count shrank to the new limit; the next release hands over again
        assert await redis.zcard(KEYS.leases(T)) == 1
        await parked(a)
        await answered(a, held[1]).execute()
        got = await asyncio.wait_for(waiter, 1)
        assert a.handovers[T] == 1
    else:
        got = await asyncio.wait_for(waiter, 2)  # once the cooldown is over
        await held[1].release(1, 1)
    await got.release(1, 1)
    assert await redis.zcard(KEYS.leases(T)) == 0


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_strands_no_slot(
    gates: GateFactory, redis: Redis
) -> None:
    settings = make_settings(concurrency=1)
    a, b = await gates(settings), await gates(settings)
    held = await admitted(await a.try_admit(T, 1, 1))
    own = asyncio.create_task(a.admit(T, 1, 1, timeout_s=5))
    await parked(a)
    other = asyncio.create_task(b.admit(T, 1, 1, timeout_s=5))
    await parked(b)
    release = answered(a, held)  # handed to `own` ...
    own.cancel()  # ... which is cancelled before it can start: the slot goes on through the line
    with pytest.raises(asyncio.CancelledError):
        await own
    await release.execute()
    got = await asyncio.wait_for(other, 2)
    assert await redis.zrange(KEYS.leases(T), 0, -1) == [got.lease_id.encode()]
    await got.release(1, 1)
    assert await redis.zcard(KEYS.leases(T)) == 0 and await redis.zcard(KEYS.line(T)) == 0


async def test_a_handed_lease_found_reaped_marks_the_call_lost(gates: GateFactory, redis: Redis) -> None:
    a = await gates(make_settings(concurrency=1))
    held = await admitted(await a.try_admit(T, 1, 1))
    waiter = asyncio.create_task(a.admit(T, 1, 1, timeout_s=5))
    await parked(a)
    release = answered(a, held)
    got = await asyncio.wait_for(waiter, 1)
    await redis.zrem(KEYS.leases(T), held.lease_id)  # reaped meanwhile (its holder looked dead)
    await release.execute()
    assert got.lost.is_set()
    await got.release(1, 1)


async def test_reaping_an_earlier_start_on_the_same_host_and_pid_frees_only_that_starts_slots(
    redis_url: str, redis: Redis
) -> None:
    # A container restarted in its pod keeps its hostname and is pid 1 again. The reaper frees a dead
    # process's slots by its lease ids' owner part: the new start's slots must not go with the old one's.
    earlier, now = owner_id(), owner_id()  # two starts of one host and pid
    settings = make_settings(concurrency=4)
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    dead, live = (TierGate(c, KEYS, settings, owner=o) for c, o in zip(clients, (earlier, now), strict=True))
    stale = await admitted(await dead.try_admit(T, 1, 1))
    held = await admitted(await live.try_admit(T, 1, 1))
    token = new_owner_token(earlier)
    await redis.sadd(KEYS.recovery_owners, token)  # registered, then its heartbeat stopped
    assert await Recovery(redis, redis_url, KEYS, new_owner_token(now)).reap(token) is not None
    assert await redis.zrange(KEYS.leases(T), 0, -1) == [held.lease_id.encode()]
    assert stale.lease_id != held.lease_id
    await held.release(1, 1)
    for gate, c in zip((dead, live), clients, strict=True):
        await gate.close()
        await c.aclose()


# --- CLI -----------------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_limits_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_set_and_show(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("ROUTEQ_KEY_PREFIX", "t")
    assert run_cli(["limits", "set", "opus", "--concurrency", "2", "--rpm", "none", "--otpm", "500"]) == 0
    capsys.readouterr()
    assert run_cli(["limits", "show", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["opus"]["limits"]["concurrency"] == {"value": 2, "source": "runtime"}
    assert data["opus"]["limits"]["otpm"] == {"value": 500, "source": "runtime"}
    assert data["haiku"]["limits"]["concurrency"]["source"] == "settings"
    assert data["opus"]["in_flight"] == 0 and data["opus"]["cooldown_s"] == 0
    assert run_cli(["limits", "show"]) == 0
    assert "2 (runtime)" in capsys.readouterr().out
    assert run_cli(["limits", "set", "opus"]) == 2  # nothing to set


def test_cli_without_redis_url_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("REDIS_URL", "ROUTEQ_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir("/")  # no .env
    assert run_cli(["limits", "show"]) == 2
    assert "REDIS_URL" in capsys.readouterr().err


async def test_an_answer_ends_the_outage_streak(gates: GateFactory, redis: Redis) -> None:
    gate = await gates(make_settings(concurrency=4))
    steps = (0.05, 0.2, 1.0)
    assert (await gate.outage(T, "timeout", steps, 60.0))[1] == 1
    await asyncio.sleep(0.08)  # the first pause is over: the next failed probe is a second step
    assert (await gate.outage(T, "timeout", steps, 60.0))[1] == 2
    await asyncio.sleep(0.25)
    batch = WriteBatch(redis)
    gate.answered_into(batch, T)  # a call was answered between two sporadic timeouts
    await batch.execute()
    left, streak = await gate.outage(T, "timeout", steps, 60.0)
    assert streak == 1 and left <= 0.05  # back to the first, short step, not the third


async def test_a_newcomer_is_refused_while_anyone_waits_even_with_a_slot_free(
    gates: GateFactory, redis: Redis
) -> None:
    gate = await gates(make_settings(concurrency=2))
    await redis.zadd(KEYS.line(T), {"w9:1|1|1": 0})  # someone waits (a release is about to serve it)
    refused = await gate.try_admit(T, 1, 1)
    assert isinstance(refused, Refusal) and refused.reason == "queued"
    await redis.delete(KEYS.line(T))
    await (await admitted(await gate.try_admit(T, 1, 1))).release(1, 1)
