"""A rejected API key pauses the fleet, logged once per worker, and dead-letters nothing."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.settings import Settings
from tests.helpers import wait_batch, worker_env
from worker.sandbox.embedded import Child, routeq_cmd, start_mock_api, start_workers, wait_port

pytestmark = pytest.mark.integration


async def test_a_401_pauses_intake_and_is_logged_once(redis_url: str, tmp_path: Path) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    api_url, api = start_mock_api("--api-key", "the-right-key")  # the workers' key is rejected
    env = worker_env(
        redis_url,
        api_url,
        ROUTEQ_LEARNED_ROUTER="false",
        ROUTEQ_CACHING="false",
        ROUTEQ_MAX_ATTEMPTS="2",
        ROUTEQ_AUTH_PAUSE_S="1",
    )
    workers = start_workers(1, env, log_dir=tmp_path)
    try:
        jobs = [Job.model_validate({"task": "other", "prompt": f"Key test {i}."}) for i in range(12)]
        await Producer(redis, s).enqueue(jobs, batch="auth")
        # Wait until the worker has met the 401 (start-up can take seconds on a loaded machine), then
        # for several pauses: before the fix every job was dead by then.
        log_path = tmp_path / "worker-0.log"
        for _ in range(300):
            if log_path.exists() and "the API rejected the key" in log_path.read_text():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the worker never met the rejected key")
        await asyncio.sleep(3.0)
        agg = await redis.hgetall(s.keys.batch_agg("auth"))
        assert agg.get(b"failed") is None and await redis.hlen(s.keys.batch_dead("auth")) == 0, agg
        # the operator fixes the key (here: the API starts accepting it); the paused jobs complete
        port = urlparse(api_url).port
        api.stop()
        proc = subprocess.Popen(
            routeq_cmd("mock-api", "--host", "127.0.0.1", "--port", str(port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        api = Child(proc, "mock-api")
        wait_port(port or 0, proc=proc)
        st = await wait_batch(s, redis, "auth", timeout=30)
        assert (st["done"], st["failed"]) == (12, 0), st
    finally:
        for w in workers:
            w.stop()
        api.stop()
        await redis.aclose()
    log = (tmp_path / "worker-0.log").read_text()
    assert log.count("the API rejected the key") == 1, log[-2000:]
    assert "sk-test-SECRET" not in log
