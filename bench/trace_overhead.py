"""Cost of tracing on a 2 000-job enqueue: off vs on (OTLP/HTTP to a receiver in another process).

Run: .venv/bin/python bench/trace_overhead.py [--jobs 2000] [--rounds 7]
Prints one JSON object. Each round enqueues the same jobs into a fresh batch, alternating off/on; the "on"
time includes shutdown_tracing()'s flush (what the CLI pays before it exits).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.getcwd())
from jobs import telemetry
from jobs.connections import connect
from jobs.contract import Job, TaskType
from jobs.producer import Producer
from jobs.settings import Settings
from worker.sandbox.embedded import EmbeddedRedis, wait_port

RX = """
import sys, time
sys.path.insert(0, '.')
from tests.otlp_receiver import OtlpReceiver
rx = OtlpReceiver().start()
print(rx.port, flush=True)
while True:
    time.sleep(1)
"""


async def one(settings: Settings, jobs: list[Job], batch: str, traced: bool) -> tuple[float, float]:
    redis = await connect(settings)
    try:
        if traced:
            assert telemetry.setup_tracing("routeq-producer")
        w0, c0 = time.perf_counter(), time.process_time()
        res = await Producer(redis, settings).enqueue(jobs, batch=batch)
        if traced:
            telemetry.shutdown_tracing()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        assert res.enqueued == len(jobs)
        await redis.flushdb()
        return w, c
    finally:
        await redis.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    rx = subprocess.Popen([sys.executable, "-c", RX], stdout=subprocess.PIPE, text=True)
    box = EmbeddedRedis().start()
    try:
        assert rx.stdout is not None
        port = int(rx.stdout.readline())
        wait_port(port, proc=None)
        for k in list(os.environ):
            if k.startswith("OTEL_"):
                del os.environ[k]
        settings = Settings(redis_url=box.url)
        jobs = [
            Job(task=TaskType.classify, prompt=f"Is message {i} spam? " + "x" * 200) for i in range(a.jobs)
        ]
        out: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
        asyncio.run(one(settings, jobs, "warmup", False))  # warm the script cache, imports, JIT-free paths
        for r in range(a.rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                if mode == "on":
                    os.environ.update(
                        {
                            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                        }
                    )
                else:
                    for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL"):
                        os.environ.pop(k, None)
                out[mode].append(asyncio.run(one(settings, jobs, f"b{r}{mode}", mode == "on")))
        med = {
            m: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
            for m, v in out.items()
        }
        print(
            json.dumps(
                {
                    "jobs": a.jobs,
                    "rounds": a.rounds,
                    "chunks": -(-a.jobs // 500),
                    "off_wall_ms": round(med["off"][0] * 1000, 1),
                    "on_wall_ms": round(med["on"][0] * 1000, 1),
                    "off_cpu_ms": round(med["off"][1] * 1000, 1),
                    "on_cpu_ms": round(med["on"][1] * 1000, 1),
                    "on_over_off_wall": round(med["on"][0] / med["off"][0], 3),
                    "on_minus_off_wall_ms": round((med["on"][0] - med["off"][0]) * 1000, 1),
                    "off_all_wall_ms": [round(w * 1000) for w, _ in out["off"]],
                    "on_all_wall_ms": [round(w * 1000) for w, _ in out["on"]],
                }
            )
        )
    finally:
        box.stop()
        rx.terminate()
        rx.wait(5)


if __name__ == "__main__":
    main()
