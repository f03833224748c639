"""Prometheus metrics of a worker process, and the HTTP endpoint that serves them and the k8s probes.

Everything lives in its own ``CollectorRegistry`` (no global state, several per test process are fine).

Queue depth is what an autoscaler reads, so it is read from Redis at scrape time by a custom collector
using a small *sync* Redis client: the HTTP server runs in its own thread, so a blocking ZCARD pipeline
(four O(1) commands, short timeouts) never touches the worker's event loop, and the value is as fresh as
the scrape. An async refresher would add a task to manage and serve values up to a period old.
Every worker reports the same fleet-wide depth, so autoscaler queries take ``max`` across pods.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from jobs.keys import Keys
from jobs.results import Attempt, JobResult, usd_float
from jobs.tiers import TIER_ORDER, Tier

QUEUE_DEPTH = "routeq_queue_depth"
QUEUE_DEPTH_UP = "routeq_queue_depth_up"
INTAKE = "intake"  # the ``tier`` label of the intake queue
DEFAULT_PORT = 9464  # the port the deploy manifests use (the usual Prometheus exporter port)

WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


# --- queue depth, read at scrape time ------------------------------------------------------------------


def queue_keys(keys: Keys, tiers: Iterable[Tier] = TIER_ORDER) -> list[tuple[str, str]]:
    """(tier label, Redis key) of every queue a worker pulls from."""
    return [(INTAKE, keys.intake_queue)] + [(t.value, keys.tier_queue(t)) for t in tiers]


class QueueDepthCollector:
    """``routeq_queue_depth{queue,tier}``: ZCARD of arq's sorted sets, i.e. waiting + deferred + running jobs.

    If Redis cannot be read the depth is left out (no stale number for an autoscaler to act on) and
    ``routeq_queue_depth_up`` is 0.
    """

    def __init__(self, client: redis.Redis, keys: Keys, tiers: Iterable[Tier] = TIER_ORDER) -> None:
        self._client = client
        self._queues = queue_keys(keys, tiers)

    @classmethod
    def from_url(cls, redis_url: str, keys: Keys, timeout_s: float = 1.0) -> QueueDepthCollector:
        client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return cls(client, keys)

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            QUEUE_DEPTH,
            "Jobs in a routeq queue (waiting, deferred or running), read from Redis at scrape time",
            labels=["queue", "tier"],
        )
        up = GaugeMetricFamily(QUEUE_DEPTH_UP, "1 if this scrape read the queue depths from Redis")
        return depth, up

    def describe(self) -> list[Metric]:
        # Names only, so registering does not touch Redis.
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        depth, up = self._families()
        try:
            pipe = self._client.pipeline(transaction=False)
            for _, key in self._queues:
                pipe.zcard(key)
            counts = pipe.execute()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        for (tier, key), n in zip(self._queues, counts, strict=True):
            depth.add_metric([key, tier], float(n))
        up.add_metric([], 1)
        yield depth
        yield up

    def close(self) -> None:
        self._client.close()


# --- the worker's own metrics ------------------------------------------------------------------------


class WorkerMetrics:
    """One worker process's metrics; the pipeline calls the ``observe_*`` helpers."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.worker_up = Gauge(
            "routeq_worker_up", "1 while this worker takes jobs, 0 while draining", registry=r
        )
        self.inflight = Gauge(
            "routeq_inflight", "Model calls in flight in this process", ["tier"], registry=r
        )
        self.slot_wait = Histogram(
            "routeq_slot_wait_seconds",
            "Time a job waited for admission on its tier",
            ["tier", "reason"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.cooldowns = Counter(
            "routeq_cooldowns", "Tier cooldowns started after a 429/529", ["tier", "cause"], registry=r
        )
        self.jobs = Counter(
            "routeq_jobs", "Jobs finished, by outcome and final tier", ["outcome", "tier"], registry=r
        )
        self.tokens = Counter(
            "routeq_tokens", "Tokens of paid calls, by tier and kind", ["tier", "kind"], registry=r
        )
        self.cost = Counter("routeq_cost_usd", "Cost of paid calls in USD", ["tier", "tenant"], registry=r)
        self.model_latency = Histogram(
            "routeq_model_latency_seconds",
            "Latency of model calls",
            ["tier", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._queue_depth: QueueDepthCollector | None = None

    def watch_queues(self, redis_url: str, keys: Keys, timeout_s: float = 1.0) -> QueueDepthCollector:
        """Add the scrape-time queue-depth collector (once)."""
        if self._queue_depth is None:
            self._queue_depth = QueueDepthCollector.from_url(redis_url, keys, timeout_s)
            self.registry.register(self._queue_depth)
        return self._queue_depth

    def close(self) -> None:
        if self._queue_depth is not None:
            self.registry.unregister(self._queue_depth)
            self._queue_depth.close()
            self._queue_depth = None

    @contextmanager
    def track_inflight(self, tier: Tier | str) -> Iterator[None]:
        g = self.inflight.labels(tier=str(tier))
        g.inc()
        try:
            yield
        finally:
            g.dec()

    def observe_wait(self, tier: Tier | str, reason: str, seconds: float) -> None:
        self.slot_wait.labels(tier=str(tier), reason=reason).observe(seconds)

    def observe_cooldown(self, tier: Tier | str, cause: str) -> None:
        self.cooldowns.labels(tier=str(tier), cause=cause).inc()

    def observe_attempt(self, attempt: Attempt, tenant: str) -> None:
        """One model call: latency always; tokens and cost when it was paid for."""
        tier = attempt.tier.value
        status = "error" if attempt.status == "error" else "ok"
        self.model_latency.labels(tier=tier, status=status).observe(attempt.latency_ms / 1000)
        u = attempt.usage
        for kind, n in (
            ("input", u.input_tokens),
            ("output", u.output_tokens),
            ("cache_write_5m", u.cache_write_5m_tokens),
            ("cache_write_1h", u.cache_write_1h_tokens),
            ("cache_read", u.cache_read_tokens),
        ):
            if n:
                self.tokens.labels(tier=tier, kind=kind).inc(n)
        if attempt.cost.total_pusd:
            self.cost.labels(tier=tier, tenant=tenant).inc(usd_float(attempt.cost.total_pusd))

    def observe_result(self, result: JobResult) -> None:
        tier = result.tier.value if result.tier is not None else "none"
        self.jobs.labels(outcome=result.status, tier=tier).inc()


# --- probes and the HTTP server ----------------------------------------------------------------------


@dataclass
class Health:
    """Liveness from an event-loop heartbeat; readiness from a flag the worker sets.

    Alive until the heartbeat is older than ``stale_after_s`` (a blocked or dead event loop); a process
    that never beats is taken as alive (still starting, or not using the heartbeat). Ready only between
    ``set_ready(True)`` (workers started) and ``set_ready(False)`` (draining).
    """

    stale_after_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _last_beat: float | None = None
    _ready: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def beat(self) -> None:
        with self._lock:
            self._last_beat = self.clock()

    def set_ready(self, ready: bool) -> None:
        with self._lock:
            self._ready = ready

    def alive(self) -> bool:
        with self._lock:
            return self._last_beat is None or self.clock() - self._last_beat < self.stale_after_s

    def ready(self) -> bool:
        with self._lock:
            return self._ready and (
                self._last_beat is None or self.clock() - self._last_beat < self.stale_after_s
            )


async def heartbeat(health: Health, interval_s: float = 5.0) -> None:
    """Run as a task in the worker's event loop; liveness fails if the loop stops running it."""
    import asyncio

    while True:
        health.beat()
        await asyncio.sleep(interval_s)


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def make_app(registry: CollectorRegistry, health: Health) -> WsgiApp:
    """``/metrics`` (Prometheus exposition), ``/healthz`` (liveness), ``/readyz`` (readiness)."""
    metrics = make_wsgi_app(registry)

    def probe(ok: bool, start_response: Callable[..., Any]) -> list[bytes]:
        body = b"ok\n" if ok else b"unavailable\n"
        status = "200 OK" if ok else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return probe(health.alive(), start_response)
        if path == "/readyz":
            return probe(health.ready(), start_response)
        if path == "/metrics":
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz, /readyz\n"]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would flood the worker's log


class MetricsServer:
    """The endpoint, served from a daemon thread so scrapes never block the worker's event loop."""

    def __init__(self, host: str, port: int, app: WsgiApp) -> None:
        self._httpd = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._serve, name="routeq-metrics", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._httpd.serve_forever(poll_interval=0.1)  # bounds how long stop() waits

    @property
    def port(self) -> int:
        return int(self._httpd.server_port)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def start_metrics_server(
    port: int, registry: CollectorRegistry, health: Health | None = None, host: str = "0.0.0.0"
) -> MetricsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (port 0 picks a free one)."""
    return MetricsServer(host, port, make_app(registry, health or Health()))
