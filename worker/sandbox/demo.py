"""`routeq demo`: the whole path on embedded defaults, and nothing left running afterwards.

No REDIS_URL -> a private redis-server; no ANTHROPIC_API_KEY -> the stand-in API. It generates a mixed
corpus, enqueues it in bulk, runs N worker processes, shows progress, prints the report and writes the
results as JSONL.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from jobs import telemetry
from jobs.connections import connect
from jobs.producer import Producer
from jobs.reports import batch_report, batch_status, iter_results, render_report
from jobs.settings import Settings
from jobs.sources import parse_job
from worker.sandbox import corpus
from worker.sandbox.embedded import Child, EmbeddedRedis, start_mock_api, start_workers


async def _drive(
    settings: Settings, n_jobs: int, out: Path, as_json: bool, timeout_s: float
) -> dict[str, Any]:
    redis = await connect(settings)
    try:
        jobs = [parse_job(j) for j in corpus.generate(n_jobs)]
        telemetry.setup_tracing("routeq-producer")  # no-op unless OTEL_* asks for an exporter
        try:
            batch = "demo-" + time.strftime("%Y%m%d-%H%M%S")
            res = await Producer(redis, settings).enqueue(jobs, batch=batch)
        finally:
            telemetry.shutdown_tracing()  # flush the producer's spans now; the workers export their own
        if not as_json:
            print(f"enqueued {res.enqueued} jobs as batch {res.batch}", flush=True)
        t0, deadline = time.monotonic(), time.monotonic() + timeout_s
        while True:
            st = await batch_status(redis, settings.keys, res.batch)
            if not as_json and sys.stderr.isatty():
                done = st["done"] + st["failed"]
                bar = "#" * int(30 * done / max(1, st["enqueued"]))
                print(f"\r[{bar:<30}] {done}/{st['enqueued']} ", end="", file=sys.stderr, flush=True)
            if st["pending"] == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        elapsed = time.monotonic() - t0
        if not as_json and sys.stderr.isatty():
            print(file=sys.stderr)
        report = await batch_report(redis, settings.keys, res.batch)
        report["elapsed_s"] = round(elapsed, 2)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as f:
            async for row in iter_results(redis, settings.keys, res.batch):
                f.write(orjson.dumps(row) + b"\n")
        report["results_file"] = str(out)
        return report
    finally:
        await redis.aclose()


def run(
    n_jobs: int = 240,
    workers: int = 2,
    as_json: bool = False,
    out: Path | None = None,
    timeout_s: float = 600.0,
) -> int:
    settings = Settings()
    env = os.environ.copy()
    children: list[Child] = []
    redis_box: EmbeddedRedis | None = None
    out = out or Path("out/demo-results.jsonl")
    try:
        if not settings.redis_url:
            redis_box = EmbeddedRedis().start()
            env["REDIS_URL"] = redis_box.url
            if not as_json:
                print(f"started a private redis-server at {redis_box.url}", flush=True)
        if not settings.anthropic_api_key:
            url, api = start_mock_api()
            children.append(api)
            env["ANTHROPIC_BASE_URL"], env["ANTHROPIC_API_KEY"] = url, "demo-key-for-the-stand-in"
            if not as_json:
                print(f"no ANTHROPIC_API_KEY: using the stand-in Messages API at {url}", flush=True)
        settings = Settings(redis_url=env["REDIS_URL"]) if redis_box else settings
        children += start_workers(workers, env)
        report = asyncio.run(_drive(settings, n_jobs, out, as_json, timeout_s))
        if as_json:
            print(orjson.dumps(report).decode())
        else:
            print(render_report(report))
            print(f"results: {report['results_file']}  ({report['elapsed_s']}s with {workers} workers)")
        return 0 if report["jobs"] == n_jobs and report["failed"] == 0 else 1
    finally:
        for c in reversed(children):
            c.stop()
        if redis_box:
            redis_box.stop()
