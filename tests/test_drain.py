"""SIGTERM: a worker stops taking jobs, finishes what it runs (or hands it back) and exits cleanly."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.settings import Settings
from tests.helpers import api_stats, wait_batch, worker_env
from worker.fleet.budget import CAPS_COMPLETE
from worker.sandbox.embedded import start_mock_api, start_workers

pytestmark = pytest.mark.integration


async def _in_flight(api_url: str, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(m["in_flight"] for m in api_stats(api_url)["models"].values()) >= n:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("calls never started")


@pytest.mark.parametrize(("drain_s", "handed_back"), [("10", False), ("0", True)])
async def test_sigterm_drains_or_hands_back(redis_url: str, drain_s: str, handed_back: bool) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    api_url, api = start_mock_api("--latency-ms", "1500")
    env = worker_env(redis_url, api_url, ROUTEQ_DRAIN_TIMEOUT_S=drain_s, ROUTEQ_LEARNED_ROUTER="false")
    workers = start_workers(1, env)
    try:
        jobs = [Job.model_validate({"task": "classify", "prompt": f"ticket {i}"}) for i in range(3)]
        await Producer(redis, s).enqueue(jobs, batch="drain")
        await _in_flight(api_url, 3)
        workers[0].proc.send_signal(signal.SIGTERM)
        assert workers[0].proc.wait(20) == 0
        st = await wait_batch(s, redis, "drain", timeout=0.5) if not handed_back else None
        if handed_back:
            # cancelled mid-call: the jobs went back to the queue; a fresh worker completes them
            assert (
                await redis.zcard(s.keys.intake_queue)
                + sum([await redis.zcard(s.keys.tier_queue(t)) for t in ("haiku", "sonnet", "opus")])
                == 3
            )
            workers += start_workers(1, env)
            st = await wait_batch(s, redis, "drain", timeout=30)
        assert st is not None and st["done"] == 3
        assert await redis.zcard(s.keys.leases("haiku")) == 0  # slots released, not left to expire
    finally:
        for w in workers:
            w.stop()
        api.stop()
        await redis.aclose()


async def test_a_worker_reads_the_budget_caps_before_taking_jobs(redis_url: str) -> None:
    # On a Redis without the caps index, the first jobs each waited for it to be built (a keyspace SCAN)
    # between their slot and their call; a starting worker builds it before it claims anything.
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    workers = start_workers(1, worker_env(redis_url, "http://127.0.0.1:9", ROUTEQ_LEARNED_ROUTER="false"))
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while not await redis.exists(s.keys.recovery_owners):
            assert asyncio.get_running_loop().time() < deadline, "the worker never registered"
            await asyncio.sleep(0.05)
        deadline = asyncio.get_running_loop().time() + 15  # registered: moments from claiming jobs
        while not await redis.sismember(s.keys.budget_capped, CAPS_COMPLETE):  # type: ignore[misc]
            assert asyncio.get_running_loop().time() < deadline, "no caps index before any job"
            await asyncio.sleep(0.05)
    finally:
        for w in workers:
            w.stop()
        await redis.aclose()
