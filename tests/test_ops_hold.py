"""A budget cap with ROUTEQ_BUDGET_ACTION=hold: jobs wait (nothing fails) and status counts them as held."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.settings import Settings
from tests.helpers import Fleet, run_cli

pytestmark = pytest.mark.integration


async def test_held_jobs_are_counted_in_status(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    with Fleet(redis_url, workers=1, ROUTEQ_LEARNED_ROUTER="false", ROUTEQ_BUDGET_ACTION="hold"):
        try:
            rc, _, err = await asyncio.to_thread(
                run_cli, "budget", "set", "--batch", "hb", "--usd", "0.000001"
            )
            assert rc == 0, err
            jobs = [Job.model_validate({"task": "other", "prompt": f"Held {i}."}) for i in range(3)]
            await Producer(redis, s).enqueue(jobs, batch="hb")
            deadline = time.monotonic() + 30
            while True:
                rc, out, err = await asyncio.to_thread(run_cli, "status", "hb", "--json")
                st = orjson.loads(out)
                if st["held"] == 3:
                    break
                assert time.monotonic() < deadline, st
                await asyncio.sleep(0.2)
            assert (st["pending"], st["failed"], st["done"]) == (3, 0, 0), st
        finally:
            await redis.aclose()
