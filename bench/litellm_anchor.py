"""routeq against what a user would otherwise build: arq workers calling LiteLLM's Router, in one run.

    .venv/bin/python bench/litellm_anchor.py [--jobs 1500] [--rounds 3] [--workers 2] [--transport aiohttp]
        [--skip-limits]

Measured side by side, interleaved round by round, on one embedded Redis and one stand-in API at 0 ms:

* ``arq_sdk_call``: bare arq workers making only the SDK call (``bench/overhead.py``'s anchor, same transport
  as routeq's);
* ``litellm_usage_v2`` / ``litellm_shuffle``: the same arq workers calling LiteLLM's ``Router.acompletion``
  (LiteLLM's anthropic provider, ``api_base`` at the stand-in) with ``routing_strategy``
  ``usage-based-routing-v2`` / ``simple-shuffle`` and its Redis-backed usage tracking on the same Redis
  (``redis_host``/``redis_port``); deployment rpm/tpm far above what the run reaches, so tracking is paid
  but never binds;
* ``routeq_default``: ``routeq worker`` processes at default settings (haiku's fleet-wide limit 16), and
  ``routeq_haiku_128``: the same with ``ROUTEQ_LIMITS__HAIKU__CONCURRENCY=128``.

Per configuration: steady jobs/s (10%-90% of the jobs finished), worker CPU ms/job over the same window
(all worker processes, user + system) and Redis commands/job (``INFO commandstats`` deltas, scripts'
inner commands included); medians over rounds, and each ratio to ``arq_sdk_call``.

Then (unless ``--skip-limits``) the limit-holding check: a limit of 8 across 2 worker processes, the stand-in
at 1 s per call, as many jobs as 16 slots could take: LiteLLM's ``max_parallel_requests=8`` and its
``rpm=8`` (usage-based-routing-v2, Redis-backed) against routeq's fleet-wide concurrency 8 and rpm 8. The
stand-in's ``/_stats`` says how many calls it ever held at once and how many it served in the window.

LiteLLM is never a dependency of routeq: it is installed (``litellm==1.110.2``, ``arq``) into its own
git-ignored venv, ``bench/.litellm-venv``, on first use. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, Procs, api_reset, api_stats, emit, settings_for, worker_env
from overhead import DEFAULT_TRANSPORT, TRANSPORTS, arq_finished, phase_arq, phase_routeq, run_arq_workers
from redis.asyncio import Redis

from jobs.contract import Job
from jobs.producer import Producer
from jobs.reports import batch_status

LITELLM = "litellm==1.110.2"
VENV = ROOT / "bench" / ".litellm-venv"
WORKER = ROOT / "bench" / "_litellm_worker.py"
QUEUE = "bench:litellm"
LIMIT = 8
LIMIT_CALL_MS = 1000
LIMIT_WINDOW_S = 30.0


class CannotInstall(Exception):
    pass


def venv_python() -> Path:
    """The LiteLLM venv's interpreter, creating the venv and installing LiteLLM on first use."""
    py = VENV / "bin" / "python"
    check = [str(py), "-c", "import importlib.metadata as m, arq; print(m.version('litellm'))"]
    if py.exists():
        got = subprocess.run(check, capture_output=True, text=True, env=_quiet_env())
        if got.returncode == 0 and got.stdout.strip() == LITELLM.split("==")[1]:
            return py
    print(f"litellm_anchor: installing {LITELLM} and arq into {VENV}", file=sys.stderr)
    steps = [
        ("python -m venv", [sys.executable, "-m", "venv", str(VENV)]),
        (
            f"pip install {LITELLM} arq",
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", LITELLM, "arq==0.28.0"],
        ),
        ("import litellm", check),
    ]
    for label, argv in steps:
        got = subprocess.run(argv, capture_output=True, text=True, env=_quiet_env())
        if got.returncode != 0:
            last = next((ln for ln in reversed(got.stderr.splitlines()) if ln.strip()), "no output")
            raise CannotInstall(f"{label} failed: {last.strip()}")
    return py


def _quiet_env() -> dict[str, str]:
    return {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": ""}


def litellm_argv(py: Path, url: str, api_url: str, strategy: str, poll: float, **limits: int) -> list[str]:
    argv = [str(py), str(WORKER), url, api_url, "--strategy", strategy, "--poll-delay", str(poll)]
    argv += ["--queue", QUEUE]
    for name, value in limits.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


async def enqueue_litellm(url: str, n: int) -> float:
    from arq.connections import RedisSettings, create_pool

    pool = await create_pool(RedisSettings.from_dsn(url))
    t0 = time.perf_counter()
    for i in range(n):
        await pool.enqueue_job("litellm_call", i, _queue_name=QUEUE)
    took = time.perf_counter() - t0
    await pool.aclose()
    return took


async def phase_litellm(
    procs: Procs, py: Path, url: str, api_url: str, n: int, workers: int, poll: float, strategy: str
) -> dict[str, Any]:
    enqueue_s = await enqueue_litellm(url, n)
    argv = litellm_argv(py, url, api_url, strategy, poll)
    return await run_arq_workers(procs, url, n, workers, argv, _quiet_env(), enqueue_s)


# --- the limit-holding check --------------------------------------------------------------------------


async def hold_litellm(
    procs: Procs, py: Path, url: str, api_url: str, n: int, strategy: str, **limits: int
) -> dict[str, Any]:
    await enqueue_litellm(url, n)
    api_reset(api_url)
    argv = litellm_argv(py, url, api_url, strategy, 0.05, **limits)
    kids = [procs.spawn(argv, _quiet_env(), f"litellm-{i}") for i in range(2)]
    redis = Redis.from_url(url)
    # The window opens when the first call reaches the stand-in (LiteLLM's import takes seconds).
    deadline = time.monotonic() + 180
    while _served(api_url) == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("no LiteLLM worker reached the stand-in")
        await asyncio.sleep(0.05)
    got = await _watch(api_url)
    got["jobs_finished"] = await arq_finished(redis, n)
    procs.stop_children(kids)
    await redis.flushall()
    await redis.aclose()
    return got


async def hold_routeq(procs: Procs, url: str, api_url: str, n: int, **limit_env: str) -> dict[str, Any]:
    s = settings_for(url)
    redis = Redis.from_url(url)
    jobs = [
        Job.model_validate(
            {
                "task": "other",
                "prompt": f"hold ticket {i}: my order is late",
                "constraints": {"tier": "haiku"},
            }
        )
        for i in range(n)
    ]
    await Producer(redis, s).enqueue(jobs, batch="hold")
    api_reset(api_url)
    env = worker_env(url, api_url, ROUTEQ_LEARNED_ROUTER="false", ROUTEQ_CACHING="false", **limit_env)
    kids = procs.workers(2, env)
    deadline = time.monotonic() + 180
    while _served(api_url) == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("no routeq worker reached the stand-in")
        await asyncio.sleep(0.05)
    got = await _watch(api_url)
    st = await batch_status(redis, s.keys, "hold")
    got["jobs_finished"] = int(st["done"]) + int(st["failed"])
    procs.stop_children(kids)
    await redis.flushall()
    await redis.aclose()
    return got


def _served(api_url: str) -> int:
    """Calls that reached the stand-in so far (it counts a request when it arrives)."""
    return sum(int(m["requests"]) for m in api_stats(api_url)["models"].values())


async def _watch(api_url: str) -> dict[str, Any]:
    """Sample calls started through the window; the most started within one calendar minute (the window
    LiteLLM's rpm counts in) and within any 60 s (none here: the window is shorter)."""
    points: list[tuple[float, int]] = []
    end = time.monotonic() + LIMIT_WINDOW_S
    while time.monotonic() < end:
        points.append((time.time(), _served(api_url)))
        await asyncio.sleep(0.1)
    by_minute: dict[int, tuple[int, int]] = {}
    prev = 0
    for wall, started in points:
        minute = int(wall // 60)
        lo, _ = by_minute.get(minute, (prev, prev))
        by_minute[minute] = (lo, started)
        prev = started
    got = _held(api_url)
    return {
        **got,
        "most_started_in_one_calendar_minute": max((b - a for a, b in by_minute.values()), default=0),
    }


def _held(api_url: str) -> dict[str, Any]:
    models = api_stats(api_url)["models"].values()
    return {
        "max_in_flight": sum(int(m["max_in_flight"]) for m in models),
        "calls_started_in_window": sum(int(m["requests"]) for m in models),
    }


async def limit_check(procs: Procs, py: Path, url: str) -> dict[str, Any]:
    api_url = procs.api("--latency-ms", str(LIMIT_CALL_MS))
    n = 16 * int(LIMIT_WINDOW_S * 1000 / LIMIT_CALL_MS)  # more than 16 slots could finish in the window
    rounds = {
        "litellm_max_parallel_requests_8": await hold_litellm(
            procs, py, url, api_url, n, "simple-shuffle", max_parallel=LIMIT
        ),
        "litellm_rpm_8_usage_v2": await hold_litellm(
            procs, py, url, api_url, n, "usage-based-routing-v2", rpm=LIMIT
        ),
        "routeq_concurrency_8": await hold_routeq(
            procs, url, api_url, n, ROUTEQ_LIMITS__HAIKU__CONCURRENCY=str(LIMIT)
        ),
        "routeq_rpm_8": await hold_routeq(
            procs,
            url,
            api_url,
            n,
            ROUTEQ_LIMITS__HAIKU__CONCURRENCY="64",
            ROUTEQ_LIMITS__HAIKU__RPM=str(LIMIT),
        ),
    }
    return {
        "limit": LIMIT,
        "processes": 2,
        "call_ms": LIMIT_CALL_MS,
        "window_s": LIMIT_WINDOW_S,
        # a concurrency limit holds when max_in_flight <= 8; an rpm limit of 8 allows 8 calls a minute
        # (LiteLLM counts per calendar minute; routeq's token bucket starts full and refills 8/min)
        "rpm_allowance_in_window": {
            "per_minute_window": LIMIT * 2,  # at most two minute buckets overlap a 30 s window
            "token_bucket": round(LIMIT + LIMIT * LIMIT_WINDOW_S / 60.0, 1),
        },
        **rounds,
    }


# --- the throughput table -----------------------------------------------------------------------------


def summary(runs: list[dict[str, Any]], anchor: list[dict[str, Any]] | None) -> dict[str, Any]:
    def med(key: str, rows: list[dict[str, Any]]) -> float:
        return statistics.median(float(r[key]) for r in rows)

    rate = med("jobs_per_s_polled", runs)
    out: dict[str, Any] = {
        "jobs_per_s_median": round(rate, 1),
        "jobs_per_s": [r["jobs_per_s_polled"] for r in runs],
        "worker_cpu_ms_per_job_median": round(med("worker_cpu_ms_per_job_steady", runs), 2),
        "redis_commands_per_job_median": round(
            statistics.median(float(r["redis_commands_per_job"]["total"]) for r in runs), 1
        ),
        "redis_commands_by_command_last": runs[-1]["redis_commands_per_job"]["by_command"],
    }
    if anchor:
        base = med("jobs_per_s_polled", anchor)
        out["throughput_over_arq_sdk_call"] = round(rate / base, 3) if base else None
    return out


async def main(args: argparse.Namespace, py: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {
        k: []
        for k in (
            "arq_sdk_call",
            "litellm_usage_v2",
            "litellm_shuffle",
            "routeq_default",
            "routeq_haiku_128",
        )
    }
    n, w, poll, tr = args.jobs, args.workers, args.poll_delay, args.transport
    with Procs() as procs:
        r = procs.redis()
        api_url = procs.api("--latency-ms", "0")
        for _ in range(args.rounds):
            runs["arq_sdk_call"].append(await phase_arq(procs, r.url, n, w, poll, api_url, tr))
            runs["litellm_usage_v2"].append(
                await phase_litellm(procs, py, r.url, api_url, n, w, poll, "usage-based-routing-v2")
            )
            runs["litellm_shuffle"].append(
                await phase_litellm(procs, py, r.url, api_url, n, w, poll, "simple-shuffle")
            )
            runs["routeq_default"].append(await phase_routeq(procs, r.url, api_url, n, w, poll, tr))
            runs["routeq_haiku_128"].append(
                await phase_routeq(
                    procs, r.url, api_url, n, w, poll, tr, ROUTEQ_LIMITS__HAIKU__CONCURRENCY="128"
                )
            )
        limits = None if args.skip_limits else await limit_check(procs, py, r.url)
    anchor = runs["arq_sdk_call"]
    return {
        "bench": "litellm_anchor",
        "litellm": LITELLM,
        "jobs": n,
        "rounds": args.rounds,
        "workers": w,
        "poll_delay_s": poll,
        "http_transport": tr,
        "table": {k: summary(v, anchor if k != "arq_sdk_call" else None) for k, v in runs.items() if v},
        "limit_check": limits,
        "runs": runs,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3, help="0: only the limit check")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--poll-delay", type=float, default=0.05)
    ap.add_argument("--transport", choices=TRANSPORTS, default=DEFAULT_TRANSPORT)
    ap.add_argument("--skip-limits", action="store_true", help="only the throughput table")
    cli = ap.parse_args()
    try:
        interpreter = venv_python()
    except CannotInstall as exc:
        print(
            f"litellm_anchor: cannot install {LITELLM} into {VENV}: {exc}; nothing measured", file=sys.stderr
        )
        sys.exit(2)
    print(emit(asyncio.run(main(cli, interpreter))))
