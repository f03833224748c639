"""How cost grows with work: jobs/s and worker RSS with 1k, 10k and 100k jobs queued.

    .venv/bin/python bench/scale.py [--sizes 1000,10000,100000] [--workers 2] [--cap-s 60,120,150]

The stand-in API answers at 0 latency; the same worker processes serve every size. For each size: the jobs
are enqueued in bulk (time and rate reported), then the fleet drains the queue until done or the size's
time cap; reported are the rate over the whole window, the rate in its first and last thirds (does a deep
queue slow jobs down?), finished count, worker RSS (max over the window, per process), Redis memory per
queued job, and worker CPU per job. What is left of a capped size is dropped (queues deleted) before the
next size. Default caps keep the whole run under ~6 minutes on 2 cores.

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

from _common import Procs, cpu_s, emit, rss_kb, settings_for, wait_workers, worker_env
from redis.asyncio import Redis

from jobs.contract import Job
from jobs.producer import Producer
from jobs.reports import batch_status
from jobs.settings import Settings
from jobs.tiers import TIER_ORDER


def make_jobs(n: int, tag: str) -> list[Job]:
    tasks = ["classify", "extract", "summarize", "qa", "translate"]
    return [
        Job.model_validate({"task": tasks[i % len(tasks)], "prompt": f"{tag} ticket {i}: where is my order?"})
        for i in range(n)
    ]


def rate_between(samples: list[tuple[float, int]], a: float, b: float) -> float:
    """Jobs/s between fractions a and b of the window's duration."""
    if len(samples) < 2:
        return 0.0
    end = samples[-1][0]
    lo = next(x for x in samples if x[0] >= a * end)
    hi = next(x for x in samples if x[0] >= b * end)
    return (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else 0.0


async def one_size(
    redis: Redis, s: Settings, pids: list[int], n: int, cap_s: float, batch: str
) -> dict[str, Any]:
    mem0 = int((await redis.info("memory"))["used_memory"])
    jobs = make_jobs(n, batch)
    t0 = time.perf_counter()
    res = await Producer(redis, s).enqueue(jobs, batch=batch)
    enqueue_s = time.perf_counter() - t0
    del jobs
    mem1 = int((await redis.info("memory"))["used_memory"])
    cpu0 = sum(cpu_s(p) for p in pids)
    samples: list[tuple[float, int]] = []
    rss_max = dict.fromkeys(pids, 0)
    t0 = time.monotonic()
    while True:
        st = await batch_status(redis, s.keys, batch)
        finished = int(st["done"]) + int(st["failed"])
        now = time.monotonic() - t0
        samples.append((now, finished))
        for p in pids:
            rss_max[p] = max(rss_max[p], rss_kb(p))
        if finished >= res.enqueued or now > cap_s:
            break
        await asyncio.sleep(0.25)
    cpu_used = sum(cpu_s(p) for p in pids) - cpu0
    complete = finished >= res.enqueued
    if not complete:  # drop the rest so the next size starts clean
        await redis.delete(s.keys.intake_queue, *(s.keys.tier_queue(t) for t in TIER_ORDER))
        await asyncio.sleep(2.0)
    elapsed = samples[-1][0]
    return {
        "queued": res.enqueued,
        "enqueue_s": round(enqueue_s, 2),
        "enqueue_jobs_per_s": round(res.enqueued / enqueue_s, 0),
        "redis_bytes_per_queued_job": round((mem1 - mem0) / max(1, res.enqueued)),
        "window_s": round(elapsed, 1),
        "finished": finished,
        "complete": complete,
        "jobs_per_s": round(finished / elapsed, 1) if elapsed else None,
        "jobs_per_s_first_third": round(rate_between(samples, 0.0, 1 / 3), 1),
        "jobs_per_s_last_third": round(rate_between(samples, 2 / 3, 1.0), 1),
        "worker_cpu_ms_per_job": round(cpu_used / max(1, finished) * 1000, 1),
        "worker_rss_max_mb": [round(v / 1024, 1) for v in rss_max.values()],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(x) for x in args.sizes.split(",")]
    caps = [float(x) for x in args.cap_s.split(",")]
    caps += [caps[-1]] * (len(sizes) - len(caps))
    out: dict[str, Any] = {}
    with Procs() as procs:
        r = procs.redis()
        s = settings_for(r.url)
        api_url = procs.api("--latency-ms", "0")
        redis = Redis.from_url(r.url)
        kids = procs.workers(args.workers, worker_env(r.url, api_url))
        startup = await wait_workers(redis, s, args.workers)
        pids = [k.proc.pid for k in kids]
        rss_idle = [round(rss_kb(p) / 1024, 1) for p in pids]
        for n, cap in zip(sizes, caps, strict=True):
            out[str(n)] = await one_size(redis, s, pids, n, cap, f"scale{n}")
        await redis.aclose()
    return {
        "bench": "scale",
        "workers": args.workers,
        "api_latency_ms": 0,
        "worker_startup_s": round(startup, 1),
        "worker_rss_idle_mb": rss_idle,
        "sizes": out,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cap-s", default="60,120,150", help="time cap per size, comma-separated")
    print(emit(asyncio.run(main(ap.parse_args()))))
