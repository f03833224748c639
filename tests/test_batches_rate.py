"""The Message Batches endpoints' RPM is one bucket for the whole fleet (real redis-server, the stand-in)."""

from __future__ import annotations

import asyncio
import time

import pytest

from jobs.settings import Settings
from worker.app import build_runtime
from worker.batches import rate
from worker.runtime import Runtime
from worker.sandbox.mock_api import MockConfig, start_server

pytestmark = pytest.mark.integration


async def _runtime(redis_url: str, api_url: str, rpm: int | None) -> Runtime:
    s = Settings(
        redis_url=redis_url,
        anthropic_base_url=api_url,
        anthropic_api_key="k",
        batch_rpm=rpm,
        learned_router=False,
    )
    return await build_runtime(s)


async def _close(rt: Runtime) -> None:
    await rt.gate.close()
    await rt.client.close()
    await rt.redis.aclose()


async def test_two_processes_share_one_bucket(redis_url: str) -> None:
    srv = await start_server(MockConfig())
    rpm, run_s = 60, 4.0
    # Two runtimes, each with its own Redis connection and SDK client: two processes' worth of callers.
    a, b = await _runtime(redis_url, srv.url, rpm), await _runtime(redis_url, srv.url, rpm)
    made = {"a": 0, "b": 0}

    async def hammer(name: str, rt: Runtime, until: float) -> None:
        while True:
            delay = await rate.take(rt)
            if time.monotonic() >= until:
                return
            if delay > 0:
                await asyncio.sleep(min(delay, until - time.monotonic()))
                continue
            await rt.client.messages.batches.list(limit=1)
            made[name] += 1

    try:
        t0 = time.monotonic()
        await asyncio.gather(hammer("a", a, t0 + run_s), hammer("b", b, t0 + run_s))
        elapsed = time.monotonic() - t0
        calls = srv.state.stats.batches.calls
    finally:
        await _close(a)
        await _close(b)
        await srv.stop()
    assert calls == made["a"] + made["b"]
    assert made["a"] > 0 and made["b"] > 0
    # One full bucket plus its refill; a bucket per process would have let through about twice this.
    assert rpm <= calls <= rpm + rpm / 60 * elapsed + 1, (calls, elapsed)


async def test_a_refused_take_takes_nothing_and_says_how_long(redis_url: str) -> None:
    srv = await start_server(MockConfig())
    rt = await _runtime(redis_url, srv.url, 6)  # one call every 10 s once the bucket is empty
    try:
        assert [await rate.take(rt) for _ in range(6)] == [0.0] * 6
        wait_s = await rate.take(rt, 2)
        assert 15 < wait_s <= 20  # two calls' refill; the refusal left the bucket as it was
        assert 5 < await rate.take(rt) <= 10
        with pytest.raises(rate.BatchRateLimited, match="no room"):
            await rate.wait(rt, timeout_s=1.0)
        unlimited = await _runtime(redis_url, srv.url, None)
        assert [await rate.take(unlimited) for _ in range(100)] == [0.0] * 100
        await _close(unlimited)
    finally:
        await _close(rt)
        await srv.stop()


def test_none_in_the_environment_means_unlimited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEQ_BATCH_RPM", "none")
    assert Settings().batch_rpm is None
    monkeypatch.setenv("ROUTEQ_BATCH_RPM", "120")
    assert Settings().batch_rpm == 120
    monkeypatch.delenv("ROUTEQ_BATCH_RPM")
    assert Settings().batch_rpm == 50
