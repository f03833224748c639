"""Metrics endpoint: scraped over HTTP and parsed; queue depth read from a real redis-server."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from jobs.keys import Keys
from jobs.results import Attempt, Cost, JobResult, Usage
from jobs.tiers import Tier
from worker.observe.metrics import (
    QUEUE_DEPTH,
    QUEUE_DEPTH_UP,
    Health,
    MetricsServer,
    WorkerMetrics,
    heartbeat,
    start_metrics_server,
)
from worker.sandbox.embedded import free_port

KEYS = Keys("routeq")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(server: MetricsServer) -> Samples:
    status, text = get(f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


@pytest.fixture
def served() -> Iterator[tuple[WorkerMetrics, Health, MetricsServer]]:
    metrics, health = WorkerMetrics(), Health()
    server = start_metrics_server(0, metrics.registry, health, host="127.0.0.1")
    yield metrics, health, server
    server.stop()
    metrics.close()


def test_queue_depth_is_read_from_redis_at_scrape_time(
    redis_url: str, served: tuple[WorkerMetrics, Health, MetricsServer]
) -> None:
    metrics, _, server = served
    metrics.watch_queues(redis_url, KEYS)
    r = redis.Redis.from_url(redis_url)
    r.zadd(KEYS.intake_queue, {"a": 1, "b": 2, "c": 3})
    r.zadd(KEYS.tier_queue(Tier.opus), {"d": 1, "e": 2})
    samples = scrape(server)
    depth = {dict(labels)["tier"]: v for (name, labels), v in samples.items() if name == QUEUE_DEPTH}
    assert depth == {"intake": 3, "haiku": 0, "sonnet": 0, "opus": 2}
    assert samples[(QUEUE_DEPTH, (("queue", "routeq:queue:opus"), ("tier", "opus")))] == 2
    assert samples[(QUEUE_DEPTH_UP, ())] == 1
    # Fresh at every scrape, no refresh period.
    r.zrem(KEYS.intake_queue, "a", "b")
    assert scrape(server)[(QUEUE_DEPTH, (("queue", "routeq:queue"), ("tier", "intake")))] == 1
    r.close()


def test_unreachable_redis_reports_no_depth_and_up_zero(
    served: tuple[WorkerMetrics, Health, MetricsServer],
) -> None:
    metrics, _, server = served
    metrics.watch_queues(f"redis://127.0.0.1:{free_port()}/0", KEYS, timeout_s=0.5)
    t0 = time.monotonic()
    samples = scrape(server)
    assert time.monotonic() - t0 < 3
    assert samples[(QUEUE_DEPTH_UP, ())] == 0
    assert not any(name == QUEUE_DEPTH for name, _ in samples)
    assert samples[("routeq_worker_up", ())] == 0  # the rest of the endpoint still works


def test_worker_metrics_exposed(served: tuple[WorkerMetrics, Health, MetricsServer]) -> None:
    metrics, _, server = served
    metrics.worker_up.set(1)
    paid = Attempt(
        n=1,
        tier=Tier.sonnet,
        model="m",
        status="ok",
        latency_ms=1500,
        usage=Usage(input_tokens=10, output_tokens=5, cache_read_tokens=100),
        cost=Cost(input_pusd=30_000_000, output_pusd=75_000_000, cache_read_pusd=30_000_000),
    )
    failed = Attempt(
        n=2, tier=Tier.opus, model="m", status="error", latency_ms=200, error_type="overloaded_error"
    )
    metrics.observe_attempt(paid, "acme")
    metrics.observe_attempt(paid, "acme")
    metrics.observe_attempt(failed, "acme")
    metrics.observe_result(
        JobResult(job_id="j", batch="b", tenant="acme", task="qa", status="done", tier=Tier.sonnet)
    )
    metrics.observe_result(JobResult(job_id="k", batch="b", tenant="acme", task="qa", status="failed"))
    metrics.observe_wait(Tier.opus, "slot", 0.3)
    metrics.observe_cooldown(Tier.opus, "529")
    with metrics.track_inflight(Tier.haiku):
        inside = scrape(server)
    samples = scrape(server)

    assert inside[("routeq_inflight", (("tier", "haiku"),))] == 1
    assert samples[("routeq_inflight", (("tier", "haiku"),))] == 0
    assert samples[("routeq_worker_up", ())] == 1
    assert samples[("routeq_tokens_total", (("kind", "input"), ("tier", "sonnet")))] == 20
    assert samples[("routeq_tokens_total", (("kind", "cache_read"), ("tier", "sonnet")))] == 200
    assert ("routeq_tokens_total", (("kind", "input"), ("tier", "opus"))) not in samples  # unpaid call
    assert samples[("routeq_cost_usd_total", (("tenant", "acme"), ("tier", "sonnet")))] == pytest.approx(
        2 * 0.000135
    )
    assert samples[("routeq_jobs_total", (("outcome", "done"), ("tier", "sonnet")))] == 1
    assert samples[("routeq_jobs_total", (("outcome", "failed"), ("tier", "none")))] == 1
    assert samples[("routeq_model_latency_seconds_count", (("status", "ok"), ("tier", "sonnet")))] == 2
    assert (
        samples[
            ("routeq_model_latency_seconds_bucket", (("le", "1.0"), ("status", "ok"), ("tier", "sonnet")))
        ]
        == 0
    )
    assert (
        samples[
            ("routeq_model_latency_seconds_bucket", (("le", "2.0"), ("status", "ok"), ("tier", "sonnet")))
        ]
        == 2
    )
    assert samples[("routeq_model_latency_seconds_count", (("status", "error"), ("tier", "opus")))] == 1
    assert samples[("routeq_slot_wait_seconds_sum", (("reason", "slot"), ("tier", "opus")))] == pytest.approx(
        0.3
    )
    assert samples[("routeq_cooldowns_total", (("cause", "529"), ("tier", "opus")))] == 1


def test_registries_are_independent() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()  # would raise "Duplicated timeseries" on a shared registry
    a.worker_up.set(1)
    assert b.registry.get_sample_value("routeq_worker_up") == 0
    assert a.registry.get_sample_value("routeq_worker_up") == 1


def test_probes() -> None:
    now = [100.0]
    health = Health(stale_after_s=30, clock=lambda: now[0])
    server = start_metrics_server(0, WorkerMetrics().registry, health, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get(base + "/healthz")[0] == 200  # starting: alive, not ready
        assert get(base + "/readyz")[0] == 503
        health.beat()
        health.set_ready(True)
        assert get(base + "/readyz")[0] == 200
        now[0] += 31  # the event loop stopped beating
        assert get(base + "/healthz")[0] == 503
        assert get(base + "/readyz")[0] == 503
        health.beat()
        health.set_ready(False)  # draining
        assert get(base + "/healthz")[0] == 200
        assert get(base + "/readyz")[0] == 503
        assert get(base + "/nope")[0] == 404
    finally:
        server.stop()


async def test_heartbeat_task_beats() -> None:
    now = [0.0]
    health = Health(stale_after_s=1, clock=lambda: now[0])
    task = asyncio.create_task(heartbeat(health, interval_s=0.01))
    await asyncio.sleep(0.05)
    now[0] = 10.0
    assert not health.alive()
    await asyncio.sleep(0.05)
    assert health.alive()
    task.cancel()
