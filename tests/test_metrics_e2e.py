"""Metrics end to end: a real `routeq worker --metrics-port N` process, scraped over HTTP and parsed with
prometheus_client's own parser, against a real redis-server and the stand-in API (real SDK).

Jobs are enqueued while no worker runs; the stand-in answers slowly, so the scrape taken while every job
is in flight must report the queue depths Redis holds (arq keeps a running job in its queue) and the
in-flight gauge; after the batch, the counters must equal what the worker recorded in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx2
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from jobs.connections import connect
from jobs.contract import Job, TaskType
from jobs.producer import Producer
from jobs.results import JobResult, usd_float
from jobs.settings import Settings
from tests.helpers import worker_env
from worker.observe.metrics import INTAKE, queue_keys
from worker.sandbox.embedded import Child, free_port, start_mock_api, start_workers

pytestmark = pytest.mark.integration

N_JOBS = 4  # below haiku's default concurrency (16): all in flight at once
LATENCY_MS = 2500  # wide enough for every job to be in flight at once on a loaded machine


@dataclass
class Scrape:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    types: dict[str, str]

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        v = self.get(name, **labels)
        assert v is not None, f"{name}{labels} not exported; have {sorted({n for n, _ in self.samples})}"
        return v

    def labelsets(self, name: str) -> list[dict[str, str]]:
        return [dict(lbl) for n, lbl in self.samples if n == name]


def scrape(base: str) -> Scrape:
    r = httpx2.get(f"{base}/metrics", timeout=5)
    assert r.status_code == 200
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(r.text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return Scrape(samples, types)


def poll(what: str, fn: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def status(base: str, path: str) -> int:
    try:
        return httpx2.get(f"{base}{path}", timeout=2).status_code
    except httpx2.TransportError:
        return 0


@pytest.fixture
def slow_api() -> Iterator[str]:
    url, child = start_mock_api("--latency-ms", str(LATENCY_MS))
    try:
        yield url
    finally:
        child.stop()


async def test_worker_metrics_over_http(redis_url: str, slow_api: str) -> None:
    s = Settings(redis_url=redis_url)
    sync = redis.Redis.from_url(redis_url)
    queues = queue_keys(s.keys)

    def zcards() -> dict[str, int]:
        return {tier: int(sync.zcard(key)) for tier, key in queues}

    # Enqueue while no worker runs.
    jobs = [
        Job(task=TaskType.classify, prompt=f"Is message {i} spam?", constraints={"tier": "haiku"})
        for i in range(N_JOBS)
    ]
    r = await connect(s)
    try:
        res = await Producer(r, s).enqueue(jobs, batch="metrics", tenant="acme")
    finally:
        await r.aclose()
    assert res.enqueued == N_JOBS
    assert zcards() == {INTAKE: N_JOBS, "haiku": 0, "sonnet": 0, "opus": 0}

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = worker_env(redis_url, slow_api, ROUTEQ_LEARNED_ROUTER="false")
    (worker,) = start_workers(1, env, "--metrics-port", str(port))
    try:
        poll("/readyz", lambda: status(base, "/readyz") == 200, timeout=30)
        assert status(base, "/healthz") == 200

        # Every job in flight at the stand-in: depth and in-flight are stable for ~LATENCY_MS.
        poll("all in flight", lambda: scrape(base).get("routeq_inflight", tier="haiku") == N_JOBS, 15)
        busy, z = scrape(base), zcards()
        assert z[INTAKE] == N_JOBS  # arq keeps a running job in its queue until it finishes
        for tier, key in queues:
            assert busy.value("routeq_queue_depth", queue=key, tier=tier) == z[tier], tier
        assert busy.value("routeq_queue_depth_up") == 1
        assert busy.types["routeq_queue_depth"] == "gauge"
        assert busy.value("routeq_worker_up") == 1

        def finished() -> bool:
            return all(sync.exists(s.keys.result(j)) for j in res.job_ids)

        poll("batch finished", finished, timeout=30)
        results = [JobResult.model_validate_json(sync.get(s.keys.result(j)) or b"") for j in res.job_ids]
        attempts = [a for r in results for a in r.attempts]
        assert [r.status for r in results] == ["done"] * N_JOBS
        assert {a.tier.value for a in attempts} == {"haiku"}
        # The result is written before the job leaves the queue: wait for the depth, then compare.
        poll("queues drained", lambda: not any(zcards().values()), timeout=10)
        after = scrape(base)
        for tier, key in queues:
            assert after.value("routeq_queue_depth", queue=key, tier=tier) == 0
        assert after.value("routeq_inflight", tier="haiku") == 0

        assert after.value("routeq_jobs_total", outcome="done", tier="haiku") == N_JOBS
        assert after.value("routeq_tokens_total", tier="haiku", kind="input") == sum(
            a.usage.input_tokens for a in attempts
        )
        assert after.value("routeq_tokens_total", tier="haiku", kind="output") == sum(
            a.usage.output_tokens for a in attempts
        )
        assert after.types["routeq_tokens"] == after.types["routeq_jobs"] == "counter"
        assert {d["kind"] for d in after.labelsets("routeq_tokens_total")} <= {
            "input",
            "output",
            "cache_write_5m",
            "cache_write_1h",
            "cache_read",
        }
        cost = after.value("routeq_cost_usd_total", tier="haiku", tenant="acme")
        assert cost == pytest.approx(usd_float(sum(a.cost.total_pusd for a in attempts)), rel=1e-9)
        assert cost > 0

        assert after.types["routeq_model_latency_seconds"] == "histogram"
        count = after.value("routeq_model_latency_seconds_count", tier="haiku", status="ok")
        assert count == len(attempts) == N_JOBS
        total = after.value("routeq_model_latency_seconds_sum", tier="haiku", status="ok")
        assert total >= 0.9 * N_JOBS * LATENCY_MS / 1000  # the stand-in's latency shows up
        assert (
            after.value("routeq_model_latency_seconds_bucket", tier="haiku", status="ok", le="+Inf") == count
        )
        assert after.value("routeq_model_latency_seconds_bucket", tier="haiku", status="ok", le="1.0") == 0

        assert status(base, "/healthz") == 200
        assert status(base, "/readyz") == 200
        assert status(base, "/nope") == 404
    finally:
        stop(worker)
        sync.close()
    assert worker.proc.returncode == 0


def stop(worker: Child) -> None:
    worker.stop(timeout=15)
