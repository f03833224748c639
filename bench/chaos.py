"""Chaos run: N workers, a SIGKILL every few seconds (then a restart), one Redis restart with AOF on, and a
stand-in API injecting mixed faults. Prints one JSON object: jobs enqueued, done, dead-lettered (with
causes), lost (must be 0), billed twice (must be 0), in-flight losses to kills, and the reconciliation of
per-job costs with the aggregates and with the stand-in's own token counts.

    .venv/bin/python bench/chaos.py [--jobs 2000] [--workers 3] [--kill-every 5] [--fault-rate 0.10]

"billed twice" is defined in tests/test_chaos.py (served 200s per job at the stand-in minus routeq's
recorded paid attempts, beyond the kills that caught the job in flight). Talks only to 127.0.0.1 and
stops every process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.connections import connect  # noqa: E402
from jobs.producer import Producer  # noqa: E402
from jobs.reports import batch_status  # noqa: E402
from jobs.settings import Settings  # noqa: E402
from jobs.tiers import TIER_ORDER  # noqa: E402
from tests.conftest import RedisProc  # noqa: E402
from tests.helpers import worker_env  # noqa: E402
from tests.test_chaos import audit, chaos_jobs, kill_one  # noqa: E402
from worker.sandbox.embedded import Child, start_mock_api, start_workers  # noqa: E402


def fault_spec(rate: float) -> str:
    # ~rate of requests fault, mixed: rate limits, overloads, server errors, hangs, resets.
    mix = {"429": 0.2, "529": 0.1, "500": 0.2, "503": 0.1, "504": 0.1, "timeout": 0.1, "reset": 0.2}
    return ",".join(f"{k}={rate * w:.4f}" for k, w in mix.items())


async def queued(redis: Any, s: Settings) -> int:
    names = [s.keys.intake_queue, *(s.keys.tier_queue(t) for t in TIER_ORDER)]
    return sum([int(await redis.zcard(q)) for q in names])


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rp = RedisProc(appendonly=True)
    rp.start()
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="routeq-chaos-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    s = Settings(redis_url=rp.url)
    rk = s.keys
    api_url, api = start_mock_api(
        "--faults",
        fault_spec(args.fault_rate),
        "--seed",
        str(args.seed),
        "--latency-ms",
        str(args.latency_ms),
    )
    env = worker_env(
        rp.url,
        api_url,
        ROUTEQ_LEARNED_ROUTER="false",
        ROUTEQ_CALL_TIMEOUT_S="2",
        ROUTEQ_BACKOFF_BASE_S="0.1",
        ROUTEQ_BACKOFF_MAX_S="1",
        ROUTEQ_LEASE_TTL_S="10",
    )
    workers: list[Child] = []
    redis = await connect(s)
    rng = random.Random(args.seed)
    kills: dict[str, int] = {}
    n_kills = restarts = 0
    t0 = time.monotonic()
    try:
        workers = start_workers(args.workers, env, log_dir=log_dir)
        while await redis.scard(rk.recovery_owners) < args.workers:
            if time.monotonic() - t0 > 120:
                raise RuntimeError("workers did not come up")
            await asyncio.sleep(0.2)
        res = await Producer(redis, s).enqueue(chaos_jobs(args.jobs, seed=args.seed), batch="chaos")
        t_start = time.monotonic()
        log(f"enqueued {res.enqueued}; workers up after {t_start - t0:.1f}s")
        next_kill = time.monotonic() + args.kill_every
        restarted_redis = False
        last_finished, last_change = -1, time.monotonic()
        deadline = time.monotonic() + args.timeout
        while True:
            await asyncio.sleep(0.2)
            try:
                st = await batch_status(redis, s.keys, "chaos")
            except Exception as e:  # Redis restarting
                log(f"status unavailable: {e}")
                continue
            finished = st["done"] + st["failed"]
            if st["pending"] == 0:
                break
            if finished != last_finished:
                last_finished, last_change = finished, time.monotonic()
            elif time.monotonic() - last_change > 60 and not await queued(redis, s):
                log(f"stalled with empty queues: {st}")  # what is pending now is lost
                break
            if time.monotonic() > deadline:
                log(f"timeout: {st}")
                break
            if not restarted_redis and finished >= args.jobs // 2:
                log(f"restarting redis at {finished} finished")
                rp.restart()
                restarted_redis = True
                restarts += 1
            if time.monotonic() >= next_kill and finished < args.jobs * 0.95:
                # only a worker that is up (registered, heartbeating): one still importing holds nothing
                up_pids = {o.decode().split(":")[-2] for o in await redis.smembers(rk.recovery_owners)}
                alive = [w for w in workers if w.proc.poll() is None and str(w.proc.pid) in up_pids]
                if len(alive) < 2:  # keep one worker running so the batch progresses
                    next_kill = time.monotonic() + 1.0
                    continue
                victim = rng.choice(alive)
                caught = await kill_one(redis, rk, victim)
                for j in caught:
                    kills[j] = kills.get(j, 0) + 1
                n_kills += 1
                workers.remove(victim)
                workers += start_workers(1, env, log_dir=log_dir)
                log(f"killed pid {victim.proc.pid} holding {len(caught)} jobs; {finished} finished")
                next_kill = time.monotonic() + args.kill_every
        elapsed = time.monotonic() - t_start
        got = await audit(redis, s, "chaos", api_url, kills)
        reaped = await redis.scard(rk.recovery_owners)
        got.update(
            {
                "workers": args.workers,
                "kills": n_kills,
                "redis_restarts": restarts,
                "fault_rate": args.fault_rate,
                "elapsed_s": round(elapsed, 1),
                "owners_registered_at_end": reaped,
                "log_dir": str(log_dir),
            }
        )
        return got
    finally:
        await redis.aclose()
        for w in workers:
            w.stop()
        api.stop()
        rp.stop()
        shutil.rmtree(rp.dir, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--kill-every", type=float, default=5.0)
    ap.add_argument("--fault-rate", type=float, default=0.10)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--log-dir", default=None)
    print(orjson.dumps(asyncio.run(main(ap.parse_args()))).decode())
