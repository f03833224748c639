"""A worker process: one arq Worker on the intake queue plus one per tier queue, in one event loop.

Separate pullers per tier are what keep a saturated tier from blocking the others: a parked Opus job
only ever occupies an Opus puller slot. All of them share one Redis pool and one ``Runtime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from typing import Any

from arq.worker import Worker, func

from jobs import telemetry
from jobs.connections import RedisUnavailable, connect, redis_target
from jobs.keys import JOB_FUNCTION
from jobs.serialization import deserialize, serialize
from jobs.settings import Settings
from jobs.tiers import TIER_ORDER
from worker.batches import loop as batch_loop
from worker.batches.metrics import BatchQueueCollector
from worker.fleet import calibration
from worker.fleet.aggregates import PendingAggregates
from worker.fleet.arq_worker import RecoveringWorker
from worker.fleet.budget import Budgets
from worker.fleet.cache_warmer import CacheWarmer
from worker.fleet.recovery import Recovery, new_owner_token
from worker.fleet.store import Store
from worker.fleet.tier_gate import TierGate
from worker.observe import logsafe, metrics
from worker.pipeline.call import make_client
from worker.pipeline.run import ARQ_FINISH, FRESH_CLAIMS, process_job
from worker.pipeline.shadow import SHADOW_FUNCTION, SHADOW_SLOTS, shadow_job
from worker.policy.router import OPUS_AT, SONNET_AT, Thresholds
from worker.policy.scorer import Scorer
from worker.runtime import Runtime, owner_id

log = logging.getLogger("routeq.worker")

# After the drain timeout, how long shutdown may still wait on Redis before the process exits anyway.
SHUTDOWN_GRACE_S = 3.0


def load_scorer(settings: Settings) -> tuple[Scorer | None, Thresholds | None]:
    if not settings.learned_router:
        return None, None
    scorer = Scorer.load(settings.router_model_path)
    sug = scorer.thresholds
    # Explicit settings win, then the thresholds calibrated with the model, then the rule cut points.
    sonnet = next(v for v in (settings.threshold_sonnet, sug[0], SONNET_AT) if v is not None)
    opus = next(v for v in (settings.threshold_opus, sug[1], OPUS_AT) if v is not None)
    return scorer, Thresholds(sonnet=sonnet, opus=opus)


async def build_runtime(settings: Settings) -> Runtime:
    redis = await connect(settings)
    owner = owner_id()
    gate = TierGate(redis, settings.keys, settings, owner)
    await gate.start()
    scorer, thresholds = load_scorer(settings)
    return Runtime(
        settings=settings,
        redis=redis,
        client=make_client(settings),
        store=Store(redis, settings),
        gate=gate,
        warmer=CacheWarmer(redis, settings.keys, settings.warm_wait_s),
        budgets=Budgets.for_settings(redis, settings),
        scorer=scorer,
        thresholds=thresholds,
        owner=owner,
    )


def make_workers(rt: Runtime, *, tiers_only: bool = False, owner_token: str | None = None) -> list[Worker]:
    s = rt.settings
    common: dict[str, Any] = dict(
        redis_pool=rt.redis,
        burst=False,
        handle_signals=False,
        poll_delay=s.poll_delay_s,
        keep_result=0,
        max_tries=s.arq_max_tries,
        job_serializer=serialize,
        job_deserializer=deserialize,
        ctx={"routeq": rt},
        job_completion_wait=int(s.drain_timeout_s),
        health_check_interval=30,
        log_results=False,
        expires_extra_ms=s.job_expiry_s * 1000,
    )
    fn = func(process_job, name=JOB_FUNCTION, timeout=s.job_timeout_s)
    if owner_token is not None:  # claims carry the owner token so a reaper can hand them back fast
        finished: set[str] = set()  # arq jobs their record finished (record.lua): arq's finish is skipped
        common.update(recovery_owner=owner_token, recovery_keys=s.keys, finished_elsewhere=finished)
        fresh: set[str] = set()  # intake jobs claimed with no calls hash: their first run loads none
        common["ctx"] = {
            **common["ctx"],
            ARQ_FINISH: (s.keys.recovery_running(owner_token), finished),
            FRESH_CLAIMS: fresh,
        }
    cls: type[Worker] = RecoveringWorker if owner_token is not None else Worker
    intake_kw = dict(common)
    if owner_token is not None:  # intake's arq ids are the routeq job ids (jobs/producer.py)
        intake_kw.update(calls_prefix=s.keys.calls(""), fresh=fresh)
    workers = (
        []
        if tiers_only
        else [cls([fn], queue_name=s.keys.intake_queue, max_jobs=s.intake_max_jobs, **intake_kw)]
    )
    for tier in TIER_ORDER:
        slots = s.tier_max_jobs or s.tier_limits(tier).concurrency
        tier_kw = {**common, "poll_delay": s.tier_poll_delay_s}
        workers.append(cls([fn], queue_name=s.keys.tier_queue(tier), max_jobs=slots, **tier_kw))
    if s.shadow_rate > 0:
        shadow = func(shadow_job, name=SHADOW_FUNCTION, timeout=s.job_timeout_s)
        shadow_kw = {**common, "poll_delay": s.shadow_poll_s}
        workers.append(cls([shadow], queue_name=s.keys.shadow_queue, max_jobs=SHADOW_SLOTS, **shadow_kw))
    return workers


async def _queues_idle(rt: Runtime, workers: list[Worker]) -> bool:
    if any(w.tasks and any(not t.done() for t in w.tasks.values()) for w in workers):
        return False
    async with rt.redis.pipeline(transaction=False) as p:
        for w in workers:
            p.zcard(w.queue_name)
        counts = await p.execute()
    return not any(counts) and await batch_loop.idle(rt)


def _burst_stop_filter(record: logging.LogRecord) -> bool:
    """Hide arq's "shutdown on SIGUSR1" line: a burst worker stops because its queues are empty."""
    return not (isinstance(record.msg, str) and record.msg.startswith("shutdown on"))


class CannotStart(RuntimeError):
    """The worker cannot run as configured; the message is one line saying why."""


def check_port_free(port: int) -> None:
    """Refuse a metrics port another process holds before connecting anything."""
    if port == 0:
        return
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as e:
            raise CannotStart(f"metrics port {port} is not free ({e.strerror or e})") from None


async def wait_for_redis(settings: Settings, max_delay_s: float = 30.0) -> None:
    """Until Redis answers: one line when it does not, then quiet retries with capped backoff.

    A wrong URL or password is not retried: it raises ``RedisUnavailable``."""
    delay, logged = 1.0, False
    while True:
        try:
            probe = await connect(settings, fail_fast=True)
        except RedisUnavailable as e:
            if not e.retryable:
                raise
            if not logged:
                log.warning("%s; retrying with backoff (at most %.0fs apart)", e, max_delay_s)
                logged = True
            await asyncio.sleep(delay)
            delay = min(max_delay_s, delay * 2)
            continue
        await probe.aclose()
        if logged:
            log.info("redis at %s answers; starting", redis_target(settings.redis_url or ""))
        return


async def _release(rt: Runtime, workers: list[Worker], recovery: Recovery) -> None:
    """Hand back what this process holds in Redis: job tasks' ends, health keys, its registration."""
    for w in workers:
        with contextlib.suppress(Exception):
            await asyncio.gather(*w.tasks.values(), return_exceptions=True)
            await rt.redis.delete(w.health_check_key)
    if rt.store.pending is not None:
        await rt.store.pending.close()
    await recovery.close()
    await rt.gate.close()


async def run(
    settings: Settings, *, burst: bool = False, metrics_port: int | None = None, ui_port: int | None = None
) -> int:
    ui_auth = None
    if ui_port is not None:
        from worker.web.auth import make_auth

        ui_auth = make_auth(settings.ui_token, "127.0.0.1", no_auth=False)  # before anything starts
    port = metrics_port if metrics_port is not None else settings.metrics_port
    if port is not None:
        check_port_free(port)
    await wait_for_redis(settings)
    telemetry.setup_tracing("routeq-worker")
    logsafe.install()
    rt = await build_runtime(settings)
    token = new_owner_token(rt.owner)
    recovery = Recovery(rt.redis, settings.redis_url or "", settings.keys, token, lease_owner=rt.owner)
    await recovery.start()
    # Registered (heartbeat) first: a reaper applies a dead owner's pending aggregates.
    rt.store.pending = PendingAggregates(rt.redis, settings.keys, token)
    rt.store.pending.start()
    workers = make_workers(rt, owner_token=token)
    # The budget-caps index read (and built, on a Redis that has none: a SCAN) before any job waits on it.
    await rt.budgets.capped("", "")
    # Everything loaded so far (the SDK, pydantic models: ~180k objects) lives as long as the process:
    # keep it out of the collector's sight. A full collection over it takes ~180 ms here, a stall of every
    # call in flight on this worker whenever one comes; afterwards collections scan only job garbage.
    gc.collect()
    gc.freeze()
    health = metrics.Health()
    server = None
    if port is not None:
        rt.metrics.watch_queues(settings.redis_url or "", settings.keys)
        rt.metrics.registry.register(
            BatchQueueCollector.from_url(
                settings.redis_url or "", settings.keys, [settings.model_for(t) for t in TIER_ORDER]
            )
        )
        server = metrics.start_metrics_server(port, rt.metrics.registry, health)
    beat = asyncio.ensure_future(metrics.heartbeat(health))
    ui = None
    if ui_auth is not None and ui_port is not None:
        from worker.web.app import make_app, start_site

        ui = await start_site(make_app(rt.redis, settings, ui_auth), "127.0.0.1", ui_port)
    calibrating = asyncio.ensure_future(calibration.refresh_forever(rt.redis, settings.keys, rt))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def drain(sig: signal.Signals) -> None:
        # Stop taking jobs; running ones get drain_timeout_s to finish, then are cancelled and handed back.
        log.info("%s: draining (up to %.0fs)", sig.name, settings.drain_timeout_s)
        stopping.set()
        health.set_ready(False)
        rt.metrics.worker_up.set(0)
        for w in workers:
            w.handle_sig_wait_for_completion(sig)
        loop.call_later(settings.drain_timeout_s + SHUTDOWN_GRACE_S, give_up)

    def give_up() -> None:
        # Redis is away (arq's own shutdown waits on it): what is still held, a live worker's reaper
        # hands back once this process's heartbeat has stopped.
        if any(not m.done() for m in mains):
            log.warning("shutdown: still waiting after the drain timeout (Redis away?); exiting now")
            for m in mains:
                m.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, drain, sig)
    mains = [asyncio.ensure_future(w.async_run()) for w in workers]
    batch_task = asyncio.ensure_future(batch_loop.run_forever(rt, token, stopping))

    async def burst_watch() -> None:
        idle_rounds = 0
        while not stopping.is_set():
            await asyncio.sleep(0.25)
            idle_rounds = idle_rounds + 1 if await _queues_idle(rt, workers) else 0
            if idle_rounds >= 3:  # empty across all queues for ~0.75 s: nothing parked in flight either
                log.info("queues empty, exiting")
                logging.getLogger("arq.worker").addFilter(_burst_stop_filter)
                for w in workers:
                    w.handle_sig(signal.SIGUSR1)
                return

    watcher = asyncio.ensure_future(burst_watch()) if burst else None
    health.set_ready(True)
    rt.metrics.worker_up.set(1)
    log.info("routeq worker %s up: queues %s", rt.owner, ", ".join(w.queue_name for w in workers))
    try:
        await asyncio.gather(*mains, return_exceptions=True)
    finally:
        beat.cancel()
        calibrating.cancel()
        batch_task.cancel()
        if watcher:
            watcher.cancel()
        if ui is not None:
            await ui.cleanup()
        try:
            await asyncio.wait_for(_release(rt, workers, recovery), SHUTDOWN_GRACE_S)
        except TimeoutError:
            log.warning(
                "shutdown: Redis did not answer within %.0fs; leaving the rest to the reaper",
                SHUTDOWN_GRACE_S,
            )
        if server is not None:
            server.stop()
        rt.metrics.close()
        await rt.client.close()
        await rt.redis.aclose()
        telemetry.shutdown_tracing()
    return 0
