"""Fleet-wide limits with real workers: 3 worker processes, real redis-server, the stand-in API with latency.

One fleet serves the whole module (a worker process takes seconds to start on 2 cores); each test uses its
own batch, resets the stand-in's counters and any runtime limit it changed, and tops the fleet back up to
three live workers. Limits: haiku 3, sonnet 2, opus 2 (env), lease TTL 2 s. The stand-in enforces the same
per-model concurrency and answers 429 above it, so an overshoot shows both as ``max_in_flight`` and as
429s.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import orjson
import pytest
from redis.asyncio import Redis

from jobs.contract import Job
from jobs.producer import Producer
from jobs.reports import batch_status
from jobs.settings import Settings
from jobs.tiers import TIER_ORDER, Tier
from tests.conftest import RedisProc
from tests.helpers import Fleet, api_stats
from worker import cli
from worker.fleet.limit_config import reset_limits, set_limits
from worker.fleet.tier_gate import TierGate

pytestmark = pytest.mark.integration

LIMITS = {Tier.haiku: 3, Tier.sonnet: 2, Tier.opus: 2}
LATENCY_MS = {Tier.haiku: 150, Tier.sonnet: 100, Tier.opus: 300}
LEASE_TTL_S = 2.0
WORKERS = 3
MODELS = {t: Settings(_env_file=None).model_for(t) for t in TIER_ORDER}  # type: ignore[call-arg]


def settings_for(url: str) -> Settings:
    return Settings(_env_file=None, redis_url=url)  # type: ignore[call-arg]


def jobs(tier: Tier, n: int, tag: str) -> list[Job]:
    return [
        Job.model_validate(
            {"task": "classify", "prompt": f"{tag} item {i}: spam?", "constraints": {"tier": tier}}
        )
        for i in range(n)
    ]


def post(api_url: str, path: str, body: Any = None) -> None:
    httpx2.post(f"{api_url}{path}", content=orjson.dumps(body or {}), timeout=5).raise_for_status()


def model_stats(api_url: str, tier: Tier) -> dict[str, Any]:
    got: dict[str, Any] = api_stats(api_url)["models"].get(MODELS[tier], {})
    return {"requests": 0, "in_flight": 0, "max_in_flight": 0, "errors": {}, **got}


async def live_workers(redis: Redis, settings: Settings) -> int:
    """Worker processes subscribed to the limits channel (each TierGate holds one subscription)."""
    got = await redis.pubsub_numsub(settings.keys.limits_channel)
    return int(got[0][1])


async def wait_for(cond: Any, timeout: float, what: str, every: float = 0.05) -> float:
    """Poll an async predicate; returns the seconds it took."""
    t0 = time.monotonic()
    while not await cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - t0


async def wait_done(redis: Redis, s: Settings, batch: str, n: int, timeout: float) -> dict[str, Any]:
    async def finished() -> bool:
        st = await batch_status(redis, s.keys, batch)
        return bool(st["done"] + st["failed"] >= n)

    await wait_for(finished, timeout, f"batch {batch}", every=0.1)
    return await batch_status(redis, s.keys, batch)


async def routeq_cli(monkeypatch: pytest.MonkeyPatch, url: str, *argv: str) -> str:
    """``routeq ARGV`` in this process (a fresh interpreter takes seconds to import on a busy machine);
    returns what it printed. Runs in a thread: the command starts its own event loop."""
    monkeypatch.setenv("REDIS_URL", url)
    out = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out):
            return cli.main(list(argv))

    assert await asyncio.to_thread(run) == 0
    return out.getvalue()


async def drop_backlog(redis: Redis, s: Settings, tier: Tier) -> None:
    """Remove a test's unstarted jobs so they do not run into the next test."""
    await redis.delete(s.keys.intake_queue, s.keys.tier_queue(tier))


@pytest.fixture(scope="module")
def fleet(redis_proc: RedisProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    import redis as sync_redis

    c = sync_redis.Redis.from_url(redis_proc.url)
    c.flushall()
    c.close()
    cfg = tmp_path_factory.mktemp("fleet") / "api.json"
    models = {MODELS[t]: {"latency_ms": LATENCY_MS[t], "max_concurrency": LIMITS[t]} for t in TIER_ORDER}
    cfg.write_bytes(orjson.dumps({"models": models}))
    env = {f"ROUTEQ_LIMITS__{t.value.upper()}__CONCURRENCY": str(n) for t, n in LIMITS.items()}
    with Fleet(
        redis_proc.url,
        workers=WORKERS,
        api_args=("--config", str(cfg)),
        ROUTEQ_LEASE_TTL_S=str(LEASE_TTL_S),
        ROUTEQ_LEARNED_ROUTER="false",
        **env,
    ) as f:
        yield f


@pytest.fixture
async def redis(fleet: Fleet, redis_proc: RedisProc) -> AsyncIterator[Redis]:
    """A client, with the fleet back to three live workers, default limits and clean stand-in counters."""
    r = Redis.from_url(redis_proc.url)
    s = settings_for(redis_proc.url)
    for tier in TIER_ORDER:
        await reset_limits(r, s.keys, tier)
    fleet.workers = [w for w in fleet.workers if w.proc.poll() is None]
    while len(fleet.workers) < WORKERS:
        fleet.add_worker()

    async def all_up() -> bool:
        return await live_workers(r, s) >= WORKERS

    await wait_for(all_up, 60, f"{WORKERS} workers subscribed")
    post(fleet.api_url, "/_faults", "")
    post(fleet.api_url, "/_reset")
    yield r
    await r.aclose()


async def test_concurrency_limit_never_exceeded(fleet: Fleet, redis: Redis, redis_proc: RedisProc) -> None:
    s = settings_for(redis_proc.url)
    batch = [*jobs(Tier.opus, 10, "c"), *jobs(Tier.haiku, 24, "c"), *jobs(Tier.sonnet, 10, "c")]
    res = await Producer(redis, s).enqueue(batch, batch="conc")
    assert res.enqueued == len(batch)
    st = await wait_done(redis, s, "conc", len(batch), timeout=30)
    assert st["done"] == len(batch), st
    for tier, limit in LIMITS.items():
        m = model_stats(fleet.api_url, tier)
        assert m["max_in_flight"] <= limit, (tier, m)
        # the fleet did use its slots (three processes, more than one slot each possible)
        assert m["max_in_flight"] == limit, (tier, m)
        assert m["errors"].get("429", 0) == 0, (tier, m)
        assert m["requests"] == sum(1 for j in batch if j.constraints.tier == tier)


async def test_runtime_limit_change_applies_within_a_second(
    fleet: Fleet, redis: Redis, redis_proc: RedisProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings_for(redis_proc.url)
    await Producer(redis, s).enqueue(jobs(Tier.haiku, 150, "rt"), batch="rt")

    async def saturated() -> bool:
        return bool(model_stats(fleet.api_url, Tier.haiku)["max_in_flight"] >= LIMITS[Tier.haiku])

    await wait_for(saturated, 15, "haiku at its limit")
    await routeq_cli(monkeypatch, redis_proc.url, "limits", "set", "haiku", "--concurrency", "1")
    await asyncio.sleep(1.0)  # calls admitted under the old limit end within one latency (150 ms)
    post(fleet.api_url, "/_reset")
    before = await batch_status(redis, s.keys, "rt")
    await asyncio.sleep(1.5)
    m = model_stats(fleet.api_url, Tier.haiku)
    after = await batch_status(redis, s.keys, "rt")
    assert m["max_in_flight"] == 1, m
    assert m["requests"] >= 5, m  # still moving, one at a time (~6.7/s at 150 ms)
    assert after["done"] > before["done"]
    # and back: the next admissions see the restored limit
    await reset_limits(redis, s.keys, Tier.haiku)
    await asyncio.sleep(0.2)
    post(fleet.api_url, "/_reset")

    async def full() -> bool:
        return bool(model_stats(fleet.api_url, Tier.haiku)["max_in_flight"] >= LIMITS[Tier.haiku])

    await wait_for(full, 5, "the restored haiku limit")
    assert model_stats(fleet.api_url, Tier.haiku)["max_in_flight"] == LIMITS[Tier.haiku]
    await drop_backlog(redis, s, Tier.haiku)


async def test_api_429_cools_the_tier_down_for_every_worker(
    fleet: Fleet, redis: Redis, redis_proc: RedisProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings_for(redis_proc.url)
    await Producer(redis, s).enqueue(jobs(Tier.opus, 16, "cd"), batch="cd")

    async def flowing() -> bool:
        return bool(model_stats(fleet.api_url, Tier.opus)["requests"] >= 3)

    await wait_for(flowing, 15, "opus requests")
    # No retry-after on these 429s: the pipeline's default tier cooldown (5 s) applies.
    post(fleet.api_url, "/_faults", {"spec": "opus:429noretry=1.0"})

    async def got_429() -> bool:
        return bool(model_stats(fleet.api_url, Tier.opus)["errors"].get("429", 0) >= 1)

    await wait_for(got_429, 10, "a 429", every=0.01)
    post(fleet.api_url, "/_faults", "")  # only for a moment
    t_429 = time.monotonic()
    await asyncio.sleep(0.3)  # calls admitted before the cooldown was written have reached the API
    r0 = model_stats(fleet.api_url, Tier.opus)["requests"]
    shown = orjson.loads(await routeq_cli(monkeypatch, redis_proc.url, "limits", "show", "--json"))
    left = shown["opus"]["cooldown_s"]
    elapsed = time.monotonic() - t_429
    assert 0 < left <= 5.0, shown["opus"]
    assert shown["haiku"]["cooldown_s"] == 0
    # Stay inside the cooldown (never shortened; it may have been extended by a late 429).
    await asyncio.sleep(max(0.0, min(left, 5.0 - elapsed) - 0.5))
    r1 = model_stats(fleet.api_url, Tier.opus)["requests"]
    assert r1 == r0, f"{r1 - r0} opus requests during the cooldown"
    # After it: the fleet resumes and the jobs that met the 429 finish (retried, not failed).
    st = await wait_done(redis, s, "cd", 16, timeout=30)
    assert st["done"] == 16, st
    assert model_stats(fleet.api_url, Tier.opus)["requests"] > r1


async def test_saturated_tier_does_not_stall_another(
    fleet: Fleet, redis: Redis, redis_proc: RedisProc
) -> None:
    s = settings_for(redis_proc.url)
    await set_limits(redis, s.keys, Tier.opus, concurrency=1)
    n_opus, n_haiku = 200, 30  # more opus jobs than the fleet has intake slots (3 x 64)
    p = Producer(redis, s)
    await p.enqueue(jobs(Tier.opus, n_opus, "hol"), batch="hol-opus")
    await p.enqueue(jobs(Tier.haiku, n_haiku, "hol"), batch="hol-haiku")
    t0 = time.monotonic()
    try:
        await wait_done(redis, s, "hol-haiku", n_haiku, timeout=20)
        took = time.monotonic() - t0
        opus = await batch_status(redis, s.keys, "hol-opus")
        ideal = n_haiku * LATENCY_MS[Tier.haiku] / 1000 / LIMITS[Tier.haiku]  # 1.5 s
        assert took < 3 * ideal + 1.0, (took, ideal)
        assert opus["done"] <= n_opus // 4, opus  # 1 slot x 300 ms: most opus work still pending
        assert model_stats(fleet.api_url, Tier.opus)["max_in_flight"] == 1
    finally:
        await drop_backlog(redis, s, Tier.opus)


async def test_killed_holders_slots_return_within_the_lease_ttl(
    fleet: Fleet, redis: Redis, redis_proc: RedisProc
) -> None:
    s = settings_for(redis_proc.url)
    leases = s.keys.leases(Tier.haiku)
    gate = TierGate(redis, s.keys, s, owner="test")
    await Producer(redis, s).enqueue(jobs(Tier.haiku, 150, "kill"), batch="kill")
    by_pid = {w.proc.pid: w for w in fleet.workers}

    def holders(members: list[bytes]) -> dict[int, list[bytes]]:
        out: dict[int, list[bytes]] = {}
        for m in members:  # lease id = "<host>:<pid>:<start nonce>:<random>"
            pid = int(m.decode().split(":")[1])
            out.setdefault(pid, []).append(m)
        return out

    async def someone_holds() -> bool:
        return any(pid in by_pid for pid in holders(await redis.zrange(leases, 0, -1)))

    dead: list[bytes] = []
    for _ in range(2):  # a holder may release between the read and the kill; then kill another
        await wait_for(someone_holds, 15, "a worker holding a haiku slot", every=0.005)
        pid = next(p for p in holders(await redis.zrange(leases, 0, -1)) if p in by_pid)
        victim = by_pid.pop(pid)
        victim.proc.kill()  # SIGKILL mid-call: no release, no renewal
        victim.proc.wait(5)
        t_kill = time.monotonic()
        dead = holders(await redis.zrange(leases, 0, -1)).get(pid, [])
        if dead:
            break
    assert dead, "no killed worker held a slot"

    def held_by_victim(members: list[bytes]) -> list[bytes]:
        return holders(members).get(pid, [])

    post(fleet.api_url, "/_reset")
    # While the dead lease is unexpired the others stay below the limit: it still counts.
    await asyncio.sleep(1.0)  # < TTL - TTL/3: the last renewal was at most TTL/3 before the kill
    m = model_stats(fleet.api_url, Tier.haiku)
    assert m["max_in_flight"] <= LIMITS[Tier.haiku] - len(dead), (m, dead)

    async def reaped() -> bool:
        return not held_by_victim(await redis.zrange(leases, 0, -1))

    await wait_for(reaped, LEASE_TTL_S + 2, "the dead lease to be reaped")
    assert time.monotonic() - t_kill <= LEASE_TTL_S + 0.5
    # The two survivors reach the full limit again.
    post(fleet.api_url, "/_reset")

    async def full() -> bool:
        return bool(model_stats(fleet.api_url, Tier.haiku)["max_in_flight"] >= LIMITS[Tier.haiku])

    await wait_for(full, 5, "the full haiku limit again")
    assert model_stats(fleet.api_url, Tier.haiku)["max_in_flight"] == LIMITS[Tier.haiku]
    assert await gate.in_flight(Tier.haiku) <= LIMITS[Tier.haiku]
    await drop_backlog(redis, s, Tier.haiku)
