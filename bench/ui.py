"""UI page-load server time with 1,000 batches (and one batch of 1,000,000 accepted jobs); one JSON.

Batches are written through the real paths: the bulk producer (enqueue.lua) and the worker's record
script (record.lua via ``Store.record``) with priced results spread over 90 minutes, so every
aggregate, dead letter and per-minute series field is what a fleet would leave. `routeq ui` then
runs in its own process and a page load (``/``, ``/api/session``, ``/api/overview``, ``/api/batches``)
is timed on loopback, cold (the shared snapshot rebuilt from Redis) and warm (within a tick).

Anchor: what a dashboard that reads job results does per refresh (arq-style): fetch every result of
every batch and sum it. Both are measured in this run; ``ratio`` = anchor / routeq cold page load.

Usage: python bench/ui.py [--batches 1000] [--jobs-per-batch 20] [--big-batch 1000000] [--loads 10]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx2
from _common import ROOT, Procs, emit, settings_for

from jobs.connections import connect
from jobs.contract import Job
from jobs.results import Attempt, JobResult, RouteRecord, Usage
from jobs.tiers import TIER_ORDER, TOP_TIER, Tier
from worker.fleet.store import Store
from worker.policy import pricing
from worker.sandbox.embedded import routeq_cmd

TOKEN = "bench-ui-token"


def _result(job: Job, batch: str, rng: random.Random, s: Any, finished_at: float) -> JobResult:
    day = dt.date.today()
    tier = rng.choice(TIER_ORDER)
    attempts = []
    tiers = [tier] if rng.random() > 0.1 or tier == TOP_TIER else [tier, Tier(tier.next_up() or tier)]
    for n, t in enumerate(tiers, 1):
        usage = Usage(
            input_tokens=rng.randint(50, 400),
            output_tokens=rng.randint(20, 300),
            cache_read_tokens=rng.choice((0, 0, 2000)),
        )
        status = "check_failed" if n < len(tiers) else "ok"
        spec = s.spec_for(t)
        attempts.append(
            Attempt(
                n=n,
                tier=t,
                model=s.model_for(t),
                status=status,
                usage=usage,
                cost=pricing.price_call(spec, usage, day),
            )
        )
    usage = sum((a.usage for a in attempts), Usage())
    failed = rng.random() < 0.02
    return JobResult(
        job_id=job.job_id,
        batch=batch,
        tenant=f"tenant-{rng.randint(1, 20)}",
        task=job.task.value,
        status="failed" if failed else "done",
        tier=tiers[-1],
        usage=usage,
        cost=sum((a.cost for a in attempts), attempts[0].cost.__class__()),
        baseline_cost_pusd=pricing.baseline_cost(s.spec_for(TOP_TIER), usage, day),
        uncached_cost_pusd=sum(pricing.uncached_cost(s.spec_for(a.tier), a.usage, day) for a in attempts),
        route=RouteRecord(tier=tier, base_tier=tier, score=0.5, reason="bench"),
        attempts=attempts,
        latency_ms=rng.randint(200, 3000),
        error_type="check_failed" if failed else None,
        finished_at=finished_at,
    )


async def populate(redis: Any, s: Any, batches: int, per: int, big: int) -> int:
    from jobs.producer import Producer

    rng = random.Random(7)
    store = Store(redis, s)
    now = time.time()
    recorded = 0
    for b in range(batches):
        batch = f"bench-{b:04d}"
        jobs = [
            Job.model_validate({"id": f"{batch}-j{i}", "task": "summarize", "prompt": f"doc {b} {i}"})
            for i in range(per)
        ]
        await Producer(redis, s).enqueue(jobs, batch=batch, tenant=f"tenant-{b % 20}")
        for i, job in enumerate(jobs[: per - 1]):  # one job of each batch still pending
            r = _result(job, batch, rng, s, now - 5400 + (b * per + i) * 5400 / (batches * per))
            await store.record(
                r,
                {"error_type": "check_failed", "error": "bench", "job": {}} if r.status == "failed" else None,
            )
            recorded += 1
    await redis.delete(s.keys.intake_queue)  # nobody works them; the page only reads
    if big:
        key = s.keys.batch_jobs("bench-big")
        await redis.hset(
            s.keys.batch_meta("bench-big"), mapping={"created_ms": int(now * 1000), "enqueued": big}
        )
        await redis.zadd(s.keys.batches, {"bench-big": int(now * 1000)})
        for lo in range(0, big, 20_000):
            await redis.sadd(key, *(f"big-{i}" for i in range(lo, min(big, lo + 20_000))))
    return recorded


async def anchor_refresh(redis: Any, s: Any) -> float:
    """Per refresh, read every job result of every batch and sum spend: the result-key dashboard."""
    t0 = time.perf_counter()
    total = 0
    async for raw_id in redis.zscan_iter(s.keys.batches):
        batch = (raw_id[0] if isinstance(raw_id, tuple) else raw_id).decode()
        if batch == "bench-big":
            continue  # a million SMEMBERS would only make the anchor look worse
        ids = [m.decode() for m in await redis.smembers(s.keys.batch_jobs(batch))]
        for raw in await redis.mget([s.keys.result(j) for j in ids]):
            if raw is not None:
                total += JobResult.model_validate_json(raw).cost.total_pusd
    return (time.perf_counter() - t0) * 1000


def page_load(http: httpx2.Client, url: str) -> float:
    t0 = time.perf_counter()
    for path in ("/", "/api/session", "/api/overview", "/api/batches"):
        r = http.get(url + path)
        r.raise_for_status()
    return (time.perf_counter() - t0) * 1000


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--jobs-per-batch", type=int, default=20)
    ap.add_argument("--big-batch", type=int, default=1_000_000)
    ap.add_argument("--loads", type=int, default=10)
    a = ap.parse_args()
    with Procs() as procs:
        rs = procs.redis()
        s = settings_for(rs.url)
        redis = await connect(s)
        recorded = await populate(redis, s, a.batches, a.jobs_per_batch, a.big_batch)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {
            "REDIS_URL": rs.url,
            "ROUTEQ_UI_TOKEN": TOKEN,
            "PYTHONPATH": str(ROOT),
            "PATH": "/usr/bin:/bin",
        }
        procs.spawn(routeq_cmd("ui", "--port", str(port)), env, name="ui")
        url = f"http://127.0.0.1:{port}"
        with httpx2.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            for _ in range(100):
                try:
                    http.get(url + "/api/session")
                    break
                except httpx2.HTTPError:
                    time.sleep(0.2)
            body = http.get(url + "/api/batches").json()
            assert len(body["batches"]) == a.batches + (1 if a.big_batch else 0), len(body["batches"])
            cold, warm = [], []
            for _ in range(a.loads):
                time.sleep(1.6)  # past the 1.5 s tick: the first API call rebuilds the snapshot
                cold.append(page_load(http, url))
                warm.append(page_load(http, url))
            size = len(http.get(url + "/api/batches").content)
        anchor = [await anchor_refresh(redis, s) for _ in range(3)]
        await redis.aclose()
    cold_med = statistics.median(cold)
    print(
        emit(
            {
                "bench": "ui",
                "batches": a.batches + (1 if a.big_batch else 0),
                "jobs_recorded": recorded,
                "accepted_jobs": a.batches * a.jobs_per_batch + a.big_batch,
                "page_load_cold_ms_median": round(cold_med, 1),
                "page_load_cold_ms_max": round(max(cold), 1),
                "page_load_warm_ms_median": round(statistics.median(warm), 1),
                "target_ms": 300,
                "within_target": max(cold) < 300,
                "batches_json_bytes": size,
                "anchor_result_scan_ms_median": round(statistics.median(anchor), 1),
                "ratio": round(statistics.median(anchor) / cold_med, 2),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
