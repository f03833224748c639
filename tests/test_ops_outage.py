"""An API outage is the world's fault, not the job's: it dead-letters nothing and spends no attempts.

Real worker processes and the stand-in; the stand-in is killed mid-batch and started again on its port.
Both run on each HTTP transport (``ROUTEQ_HTTP_TRANSPORT``): refused and reset connections and timeouts
must look the same to the fault policy on either.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import get_args
from urllib.parse import urlparse

import httpx2
import pytest

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.results import JobResult
from jobs.settings import Settings
from tests.helpers import Fleet, wait_batch
from worker.sandbox.embedded import Child, routeq_cmd, wait_port

pytestmark = pytest.mark.integration
TRANSPORTS = get_args(Settings.model_fields["http_transport"].annotation)

ENV = {
    "ROUTEQ_LEARNED_ROUTER": "false",
    "ROUTEQ_CACHING": "false",
    "ROUTEQ_MAX_ATTEMPTS": "2",  # a job fault is allowed one retry only
    "ROUTEQ_BACKOFF_BASE_S": "0.05",
    "ROUTEQ_BACKOFF_MAX_S": "0.2",
    "ROUTEQ_CALL_TIMEOUT_S": "1",
    "ROUTEQ_LIMITS__HAIKU__CONCURRENCY": "4",
}


def haiku_jobs(n: int, tag: str) -> list[Job]:
    return [
        Job.model_validate(
            {"task": "other", "prompt": f"{tag} {i}: answer briefly.", "constraints": {"tier": "haiku"}}
        )
        for i in range(n)
    ]


async def results(redis: object, s: Settings, ids: list[str]) -> list[JobResult]:
    raws = await redis.mget([s.keys.result(j) for j in ids])  # type: ignore[attr-defined]
    return [JobResult.model_validate_json(r) for r in raws if r is not None]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_short_api_outage_dead_letters_nothing(redis_url: str, transport: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    env = {**ENV, "ROUTEQ_HTTP_TRANSPORT": transport}
    with Fleet(redis_url, workers=2, api_args=("--latency-ms", "300"), **env) as fleet:
        try:
            res = await Producer(redis, s).enqueue(haiku_jobs(40, "Outage"), batch="outage")
            deadline = time.monotonic() + 30
            while int((await redis.hgetall(s.keys.batch_agg("outage"))).get(b"done", b"0")) < 4:
                assert time.monotonic() < deadline, "the batch never started"
                await asyncio.sleep(0.05)
            port = urlparse(fleet.api_url).port
            assert port is not None
            fleet.api.proc.kill()  # the API goes away with calls in flight
            fleet.api.proc.wait(5)
            await asyncio.sleep(5.0)
            proc = subprocess.Popen(
                routeq_cmd("mock-api", "--host", "127.0.0.1", "--port", str(port), "--latency-ms", "300"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            fleet.api = Child(proc, "mock-api")
            wait_port(port, proc=proc)
            st = await wait_batch(s, redis, "outage", timeout=60)
            assert (st["done"], st["failed"], st["dead"]) == (40, 0, 0), st
            rows = await results(redis, s, res.job_ids)
            faults = [a for r in rows for a in r.attempts if a.status == "error"]
            assert faults and {a.error_type for a in faults} <= {"connection", "timeout"}
            # the tier's cooldown paced the probes: a few per job over a 5 s outage, not a burst
            assert max(sum(a.status == "error" for a in r.attempts) for r in rows) <= 4
        finally:
            await redis.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_timed_out_call_records_its_real_latency(redis_url: str, transport: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    with Fleet(redis_url, workers=1, **ENV, ROUTEQ_HTTP_TRANSPORT=transport) as fleet:
        try:
            httpx2.post(f"{fleet.api_url}/_faults", json={"spec": "haiku:timeout=1"}, timeout=5)
            res = await Producer(redis, s).enqueue(haiku_jobs(1, "Slow"), batch="slow")
            deadline = time.monotonic() + 20
            while not await redis.exists(s.keys.calls(res.job_ids[0])):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            httpx2.post(f"{fleet.api_url}/_faults", json={"spec": ""}, timeout=5)
            await wait_batch(s, redis, "slow", timeout=30)
            (row,) = await results(redis, s, res.job_ids)
            first = row.attempts[0]
            assert first.error_type == "timeout"
            assert 900 <= first.latency_ms < 5000  # ROUTEQ_CALL_TIMEOUT_S=1, measured, not 0
            assert row.status == "done"
        finally:
            await redis.aclose()
