"""Message Batches mode at scale, against realtime mode on the same jobs (the anchor), in one run.

    .venv/bin/python bench/batches.py [--jobs 20000] [--workers 4] [--batch-latency-s 5]
                                      [--window-s 2] [--timeout 900] [--skip-realtime]
                                      [--batch-rpm none]

The same generated corpus twice, each phase on a fresh stand-in and its own routeq batch:

- ``realtime``: every job through the Messages API (the anchor: cost and wall time);
- ``batch``: every job through the stand-in's Message Batches API, whose batches end
  ``--batch-latency-s`` after create; workers gather for ``--window-s``.

Reports per phase: cost, wall time (enqueue to last result); for batch mode also the API batches
created and requests per batch, realtime calls made (target 0), duplicate requests (target 0), the
wall time against the stand-in's batch latency, worker CPU per job, and Redis memory per waiting job
(the rise of ``used_memory`` over the moment before enqueue, at the largest number of jobs waiting in
API batches, divided by that number). ``cost_ratio`` = batch cost / realtime cost (target 0.5 +- 0.1).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Procs, api_stats, cpu_s, emit, settings_for, wait_workers, worker_env
from redis.asyncio import Redis

from jobs.producer import Producer
from jobs.reports import batch_report, batch_status
from jobs.settings import Settings
from jobs.sources import parse_job
from worker.sandbox import corpus


def jobs_in(raw: list[dict[str, Any]], mode: str) -> list[Any]:
    return [parse_job({**j, "constraints": {**j.get("constraints", {}), "mode": mode}}) for j in raw]


async def run_phase(
    procs: Procs, url: str, s: Settings, raw: list[dict[str, Any]], mode: str, args: argparse.Namespace
) -> dict[str, Any]:
    api_url = procs.api("--batch-latency-s", str(args.batch_latency_s))
    env = worker_env(
        url,
        api_url,
        ROUTEQ_LEARNED_ROUTER="false",
        ROUTEQ_BATCH_WINDOW_S=str(args.window_s),
        ROUTEQ_BATCH_POLL_S=str(max(0.2, args.batch_latency_s / 5)),
        ROUTEQ_BATCH_RPM=args.batch_rpm,
    )
    redis = Redis.from_url(url)
    kids = procs.workers(args.workers, env)
    await wait_workers(redis, s, args.workers)
    pids = [k.proc.pid for k in kids]
    cpu0 = sum(cpu_s(p) for p in pids)
    mem0 = int((await redis.info("memory"))["used_memory"])
    batch = f"bench-{mode}"
    t0 = time.monotonic()
    await Producer(redis, s).enqueue(jobs_in(raw, mode), batch=batch)
    enqueued_s = time.monotonic() - t0
    peak_waiting, mem_at_peak = 0, mem0
    while True:
        st = await batch_status(redis, s.keys, batch)
        if st["in_api_batch"] > peak_waiting:
            peak_waiting = st["in_api_batch"]
            mem_at_peak = int((await redis.info("memory"))["used_memory"])
        if st["done"] + st["failed"] >= len(raw) or time.monotonic() - t0 > args.timeout:
            break
        await asyncio.sleep(0.2)
    wall_s = time.monotonic() - t0
    cpu_used = sum(cpu_s(p) for p in pids) - cpu0
    rep = await batch_report(redis, s.keys, batch)
    stats = api_stats(api_url)
    procs.stop_children([*kids, procs.children[-len(kids) - 1]])
    await redis.flushdb()
    await redis.aclose()
    b = stats["batches"]
    out: dict[str, Any] = {
        "jobs": len(raw),
        "done": st["done"],
        "failed": st["failed"],
        "complete": st["done"] + st["failed"] >= len(raw),
        "cost_usd": rep["cost_usd"],
        "batch_savings_usd": rep["batch_savings_usd"],
        "wall_s": round(wall_s, 2),
        "enqueue_s": round(enqueued_s, 2),
        "realtime_calls": sum(m["requests"] for m in stats["models"].values()),
        "worker_cpu_ms_per_job": round(cpu_used / max(1, len(raw)) * 1000, 2),
    }
    if mode == "batch":
        out.update(
            {
                "api_batches_created": b["created"],
                "requests_per_batch": round(b["requests"] / max(1, b["created"]), 1),
                "duplicate_requests": b["duplicate_requests"],
                "batch_api_calls": b["calls"],
                "max_batch_api_calls_60s": b["max_calls_60s"],
                "batch_latency_s": args.batch_latency_s,
                "wall_over_batch_latency": round(wall_s / args.batch_latency_s, 2),
                "peak_jobs_in_api_batches": peak_waiting,
                "redis_bytes_per_waiting_job": round((mem_at_peak - mem0) / peak_waiting)
                if peak_waiting
                else None,
            }
        )
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    raw = list(corpus.generate(args.jobs, seed=11))
    with Procs() as procs:
        r = procs.redis()
        s = settings_for(r.url)
        phases: dict[str, Any] = {}
        if not args.skip_realtime:
            phases["realtime"] = await run_phase(procs, r.url, s, raw, "realtime", args)
        phases["batch"] = await run_phase(procs, r.url, s, raw, "batch", args)
    out: dict[str, Any] = {"bench": "batches", "workers": args.workers, **phases}
    if "realtime" in phases and phases["realtime"]["cost_usd"]:
        out["cost_ratio"] = round(phases["batch"]["cost_usd"] / phases["realtime"]["cost_usd"], 3)
        out["cost_ratio_target"] = "0.5 +- 0.1"
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--batch-latency-s", type=float, default=5.0)
    p.add_argument("--window-s", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--skip-realtime", action="store_true")
    # The stand-in's batches end in seconds, not the API's hour, and polling scales with them, so the
    # default (the real API's lowest tier) would throttle a run the API would not; calls are reported.
    p.add_argument("--batch-rpm", default="none", help="ROUTEQ_BATCH_RPM for the workers (default none)")
    return p.parse_args(argv)


if __name__ == "__main__":
    print(emit(asyncio.run(main(parse_args()))))
