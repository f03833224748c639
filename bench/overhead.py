"""routeq's per-job overhead against bare arq, in one run.

    .venv/bin/python bench/overhead.py [--jobs 2000] [--workers 2] [--poll-delay 0.05] [--profile-jobs 1000]
        [--transport httpx|aiohttp] [--rounds 3] [--anchor-checkout stock|concurrent]

(a) bare arq: ``arq.Worker`` processes running a no-op async function; jobs enqueued with
    ``create_pool().enqueue_job`` in a loop. Same worker count, poll delay, ``max_jobs`` (routeq's intake
    default, 64) and ``keep_result=0`` as routeq.
(a') the same bare arq workers running only the model call each routeq job makes (the official SDK, one
    ``messages.create`` to the stand-in): the floor any worker that calls the API pays on this machine.
    Its client is configured as routeq's is: the same HTTP transport (``--transport``, default routeq's
    ``http_transport`` default), SDK retries and the SDK's own OpenTelemetry spans off. Its Redis pool is
    redis-py's own unless ``--anchor-checkout concurrent`` gives it routeq's lock-free checkout too.
(b) routeq: the same number of jobs through ``routeq worker`` processes (default settings: learned router,
    limits, caching layout, results and aggregates) against the stand-in API at 0 latency; jobs enqueued
    with the bulk ``Producer.enqueue``.

(a') and (b) alternate for ``--rounds`` rounds; the ratio printed is the median of the rounds' ratios (this
machine is shared: one slow phase should not decide it). Jobs are enqueued before the workers start;
throughput is the steady-state rate between 10% and 90% of
the jobs finished (process start-up excluded), and the whole-batch time is reported too. Worker CPU per
job is measured over the same window (all worker processes, user + system), and over the whole phase;
Redis commands per job over the whole phase (``INFO commandstats`` deltas, scripts' inner commands
included, the benchmark's own progress polls left out).
Then, unless ``--profile-jobs 0``, one routeq worker runs under cProfile on a fresh batch and the top
costs are listed (cumulative on-CPU time per pipeline stage; coroutine time counts only while running, not
while awaiting).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT,
    CommandSampler,
    CpuSampler,
    Procs,
    api_stats,
    command_counts,
    cpu_s,
    emit,
    finish_times,
    per_job_commands,
    poll_commands,
    profiled_costs,
    profiled_worker_mode,
    settings_for,
    start_profiled_worker,
    steady_from_times,
    steady_rate,
    wait_batch,
    worker_env,
)
from redis.asyncio import Redis

from jobs.contract import Job
from jobs.producer import Producer
from jobs.reports import batch_status
from jobs.settings import Settings
from worker.sandbox.embedded import Child

ARQ_QUEUE = "bench:arq"
TRANSPORTS = ("httpx", "aiohttp")
DEFAULT_TRANSPORT = str(Settings.model_fields["http_transport"].default)
INTAKE_MAX_JOBS = 64
# "concurrent": the arq anchors check Redis connections out as routeq does (jobs/connections.py), not with
# redis-py 5.3's locked checkout; set from --anchor-checkout and read by the anchors' worker processes.
ANCHOR_CHECKOUT_ENV = "ROUTEQ_BENCH_ANCHOR_CHECKOUT"


# --- child modes ----------------------------------------------------------------------------------


# When each job of this arq worker process ended (written to --done-file on exit): its steady rate from
# the jobs' own times, as routeq's is from its results' finished_at.
DONE_AT: list[float] = []


async def noop(ctx: dict[str, Any], i: int) -> None:
    DONE_AT.append(time.time())


async def sdk_call(ctx: dict[str, Any], i: int) -> None:
    """The one thing routeq must do per job that a no-op does not: the model call through the SDK."""
    await ctx["client"].messages.create(
        model="claude-haiku-4-5",
        max_tokens=256,
        messages=[{"role": "user", "content": f"ovh ticket {i}: my order is late"}],
    )
    DONE_AT.append(time.time())


def run_arq_worker(url: str, poll_delay: float, api_url: str | None, transport: str, done_file: str) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker

    async def startup(ctx: dict[str, Any]) -> None:
        from anthropic import AsyncAnthropic, DefaultAioHttpClient

        ctx["client"] = AsyncAnthropic(
            api_key="sk-bench",
            base_url=api_url,
            max_retries=0,
            http_client=DefaultAioHttpClient() if transport == "aiohttp" else None,
            open_telemetry=False,
        )

    async def shutdown(ctx: dict[str, Any]) -> None:
        await ctx["client"].close()

    async def main() -> None:
        from arq.connections import create_pool

        pool = await create_pool(RedisSettings.from_dsn(url))
        if os.environ.get(ANCHOR_CHECKOUT_ENV) == "concurrent":
            from jobs.connections import check_out_concurrently

            check_out_concurrently(pool)
        w = Worker(
            [sdk_call if api_url else noop],
            on_startup=startup if api_url else None,
            on_shutdown=shutdown if api_url else None,
            queue_name=ARQ_QUEUE,
            redis_pool=pool,
            poll_delay=poll_delay,
            max_jobs=INTAKE_MAX_JOBS,
            keep_result=0,
            log_results=False,
            handle_signals=True,
        )
        await w.async_run()

    import contextlib

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())
    Path(f"{done_file}.{os.getpid()}").write_text(json.dumps(DONE_AT))


# --- phases -----------------------------------------------------------------------------------------


def make_jobs(n: int, tag: str) -> list[Job]:
    tasks = ["classify", "extract", "summarize", "qa", "translate"]
    return [
        Job.model_validate({"task": tasks[i % len(tasks)], "prompt": f"{tag} ticket {i}: my order is late"})
        for i in range(n)
    ]


async def arq_finished(redis: Redis, n: int) -> int:
    left = 0
    async for _ in redis.scan_iter(match="arq:job:*", count=5000):
        left += 1
    return n - left


async def phase_arq(
    procs: Procs,
    url: str,
    n: int,
    workers: int,
    poll: float,
    api_url: str | None = None,
    transport: str = DEFAULT_TRANSPORT,
) -> dict[str, Any]:
    """Bare arq: a no-op function, or (``api_url``) just the SDK call each routeq job makes."""
    from arq.connections import RedisSettings, create_pool

    pool = await create_pool(RedisSettings.from_dsn(url))
    t0 = time.perf_counter()
    for i in range(n):
        await pool.enqueue_job("sdk_call" if api_url else "noop", i, _queue_name=ARQ_QUEUE)
    enqueue_s = time.perf_counter() - t0
    await pool.aclose()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done_file = procs.temp_file(tempfile.mktemp(prefix="routeq-bench-arq-done-"))
    argv = [
        sys.executable,
        __file__,
        "--_arq-worker",
        url,
        "--poll-delay",
        str(poll),
        "--transport",
        transport,
        "--done-file",
        done_file,
    ]
    if api_url:
        argv += ["--api", api_url]
    return await run_arq_workers(procs, url, n, workers, argv, env, enqueue_s, done_file=done_file)


async def run_arq_workers(
    procs: Procs,
    url: str,
    n: int,
    workers: int,
    argv: list[str],
    env: dict[str, str],
    enqueue_s: float,
    timeout: float = 300.0,
    done_file: str | None = None,
) -> dict[str, Any]:
    """Start ``workers`` arq worker processes (``argv``) on ``n`` queued jobs and measure them to the end;
    with ``done_file``, the steady rate from the jobs' end times the workers wrote to ``done_file.<pid>``."""
    redis = Redis.from_url(url)
    cmds0 = await command_counts(redis)
    servers0 = server_cpu()
    kids = [procs.spawn(argv, env, f"arq-{i}") for i in range(workers)]
    cpu = CpuSampler([k.proc.pid for k in kids])
    cpu.start()
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    while True:
        done = await arq_finished(redis, n)
        now = time.monotonic() - t0
        samples.append((now, done))
        if done >= n or now > timeout:
            break
        await asyncio.sleep(0.05)
    cpu_total = await cpu.stop()
    cmds1 = await command_counts(redis)
    own = await poll_commands(redis, lambda: arq_finished(redis, n), len(samples))
    cmds = per_job_commands(cmds0, cmds1, n, minus=own)
    await stop_phase(procs, kids, redis)
    done_at: list[float] = []
    for f in glob.glob(f"{done_file}.*") if done_file else []:
        done_at += json.loads(Path(f).read_text())
        os.unlink(f)
    return {
        **rates(n, enqueue_s, samples, done_at),
        "finished": samples[-1][1],
        **cpu_per_job(cpu, cpu_total, samples, n, t0, servers0),
        "redis_commands_per_job": cmds,
    }


# The shared processes a phase loads besides its workers (name -> pid), set once they are started: their
# CPU per job shows what a worker's Redis commands and API calls cost on the other side.
SERVERS: dict[str, int] = {}


def server_cpu() -> dict[str, float]:
    return {name: cpu_s(pid) for name, pid in SERVERS.items()}


def cpu_per_job(
    cpu: CpuSampler,
    total_s: float,
    samples: list[tuple[float, int]],
    n: int,
    t0: float,
    servers0: dict[str, float],
) -> dict[str, float]:
    servers1 = server_cpu()
    return {
        "worker_cpu_ms_per_job_steady": round(cpu.per_job_ms(samples, n, t0), 3),
        "worker_cpu_ms_per_job_whole": round(1000.0 * total_s / max(1, n), 3),
        **{
            f"{name}_cpu_ms_per_job_whole": round(1000.0 * (servers1[name] - servers0[name]) / max(1, n), 3)
            for name in servers0
        },
    }


def rates(n: int, enqueue_s: float, samples: list[tuple[float, int]], done_at: list[float]) -> dict[str, Any]:
    """Enqueue rate, steady processing rate, and the batch time from its first finished job.

    The steady rate is from the jobs' own end times (``steady_from_times``) when all of them are known;
    ``jobs_per_s_polled`` is the finished count polled every 50 ms (routeq's from its batch report, whose
    counts lag by up to an aggregates flush), the only one where the end times are not written."""
    first = next((t for t, done in samples if done > 0), 0.0)
    polled = round(steady_rate(samples, n), 1)
    exact = len(done_at) >= n
    return {
        "enqueue_s": round(enqueue_s, 3),
        "enqueue_jobs_per_s": round(n / enqueue_s, 1),
        "jobs_per_s_steady": round(steady_from_times(done_at)[0], 1) if exact else polled,
        "steady_rate_from": "end times" if exact else "polled",
        "jobs_per_s_polled": polled,
        "batch_s_from_first_done": round(samples[-1][0] - first, 3),
    }


async def stop_phase(procs: Procs, kids: list[Child], redis: Redis) -> None:
    """Stop a phase's workers and leave Redis empty for the next phase."""
    procs.stop_children(kids)
    await redis.flushall()
    await redis.aclose()


async def phase_enqueue(url: str, n: int, reps: int) -> dict[str, Any]:
    """Enqueue alone, best of ``reps`` each (no workers running): arq's loop vs routeq's bulk producer.

    Both enqueue the same jobs (the contract's wire form, orjson-serialized): what a bare-arq user would
    send for this work, so the ratio measures the enqueue path, not payload size.
    """
    from arq.connections import RedisSettings, create_pool

    from jobs.serialization import deserialize, serialize

    s = settings_for(url)
    redis = Redis.from_url(url)
    pool = await create_pool(
        RedisSettings.from_dsn(url), job_serializer=serialize, job_deserializer=deserialize
    )
    jobs = make_jobs(n, "enq")
    arq_t, rq_t = [], []
    for rep in range(reps):
        await redis.flushall()
        t0 = time.perf_counter()
        for job in jobs:
            await pool.enqueue_job("process_job", job.to_wire(), _queue_name=ARQ_QUEUE)
        arq_t.append(time.perf_counter() - t0)
        await redis.flushall()
        t0 = time.perf_counter()
        await Producer(redis, s).enqueue(jobs, batch=f"enq{rep}")
        rq_t.append(time.perf_counter() - t0)
    await redis.flushall()
    await pool.aclose()
    await redis.aclose()
    return {
        "reps": reps,
        "arq_loop_s": [round(t, 3) for t in arq_t],
        "routeq_bulk_s": [round(t, 3) for t in rq_t],
        "speedup_best_of": round(min(arq_t) / min(rq_t), 1),
    }


async def phase_routeq(
    procs: Procs,
    url: str,
    api_url: str,
    n: int,
    workers: int,
    poll: float,
    transport: str,
    **extra_env: str,
) -> dict[str, Any]:
    s = settings_for(url)
    redis = Redis.from_url(url)
    jobs = make_jobs(n, "ovh")
    t0 = time.perf_counter()
    res = await Producer(redis, s).enqueue(jobs, batch="ovh")
    enqueue_s = time.perf_counter() - t0
    before = api_stats(api_url)
    cmds0 = await command_counts(redis)
    env = worker_env(
        url, api_url, ROUTEQ_POLL_DELAY_S=str(poll), ROUTEQ_HTTP_TRANSPORT=transport, **extra_env
    )
    servers0 = server_cpu()
    kids = procs.workers(workers, env)
    cpu = CpuSampler([k.proc.pid for k in kids])
    cpu.start()
    counts = CommandSampler(url)
    counts.start()
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    st = await wait_batch(redis, s, "ovh", res.enqueued, timeout=600, every=0.05, samples=samples)
    cpu_total = await cpu.stop()
    await counts.halt()
    cmds1 = await command_counts(redis)
    one_poll = await poll_commands(redis, lambda: batch_status(redis, s.keys, "ovh"))
    own = {k: v * len(samples) for k, v in one_poll.items()}
    cmds = per_job_commands(cmds0, cmds1, n, minus=own)
    cmds["steady"] = counts.per_job(samples, n, t0, one_poll, len(samples) / max(samples[-1][0], 1e-9))
    done_at = await finish_times(redis, s, "ovh")
    stats = api_stats(api_url)
    requests = sum(m["requests"] for m in stats["models"].values()) - sum(
        m["requests"] for m in before["models"].values()
    )
    await stop_phase(procs, kids, redis)
    return {
        **rates(n, enqueue_s, samples, done_at),
        "done": st["done"],
        "failed": st["failed"],
        "api_requests": requests,
        "api_max_in_flight": {k: v["max_in_flight"] for k, v in stats["models"].items()},
        **cpu_per_job(cpu, cpu_total, samples, n, t0, servers0),
        "redis_commands_per_job": cmds,
    }


async def phase_profile(
    procs: Procs, url: str, api_url: str, n: int, poll: float, keep: str | None, transport: str
) -> dict[str, Any]:
    s = settings_for(url)
    redis = Redis.from_url(url)
    res = await Producer(redis, s).enqueue(make_jobs(n, "prof"), batch="prof")
    env = worker_env(url, api_url, ROUTEQ_POLL_DELAY_S=str(poll), ROUTEQ_HTTP_TRANSPORT=transport)
    kid, out = start_profiled_worker(procs, __file__, env, keep)
    st = await wait_batch(redis, s, "prof", res.enqueued, timeout=600, every=0.1)
    costs = profiled_costs(procs, kid, out, st)
    await redis.flushall()
    await redis.aclose()
    return costs


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with Procs() as procs:
        r = procs.redis()
        api_url = procs.api("--latency-ms", "0")
        SERVERS.update({"redis": r.child.proc.pid if r.child else 0, "api": procs.children[-1].proc.pid})
        enq_only = await phase_enqueue(r.url, args.jobs, args.enqueue_reps)
        arq_res = await phase_arq(procs, r.url, args.jobs, args.workers, args.poll_delay)
        # The SDK-call anchor and routeq alternate, round by round: a burst of load from elsewhere on a
        # shared machine lands on one round's pair, not on one side of the comparison.
        pairs = []
        for _ in range(args.rounds):
            a = await phase_arq(
                procs, r.url, args.jobs, args.workers, args.poll_delay, api_url, args.transport
            )
            b = await phase_routeq(
                procs, r.url, api_url, args.jobs, args.workers, args.poll_delay, args.transport
            )
            pairs.append((a, b))
        round_ratios = [
            round(b["jobs_per_s_steady"] / a["jobs_per_s_steady"], 3) if a["jobs_per_s_steady"] else 0.0
            for a, b in pairs
        ]
        # The round whose ratio is the median (with an even count, the upper of the middle two) is shown
        # in full.
        arq_sdk, rq = pairs[sorted(range(len(pairs)), key=lambda i: round_ratios[i])[len(pairs) // 2]]
        cpu_ratios = [
            round(a["worker_cpu_ms_per_job_steady"] / b["worker_cpu_ms_per_job_steady"], 3)
            if b["worker_cpu_ms_per_job_steady"]
            else 0.0
            for a, b in pairs
        ]
        prof = None
        if args.profile_jobs:
            prof = await phase_profile(
                procs, r.url, api_url, args.profile_jobs, args.poll_delay, args.profile_out, args.transport
            )
    ratio = rq["jobs_per_s_steady"] / arq_res["jobs_per_s_steady"] if arq_res["jobs_per_s_steady"] else None
    sdk_ratio = statistics.median(round_ratios) if round_ratios else None
    enq = arq_res["enqueue_s"] / rq["enqueue_s"] if rq["enqueue_s"] else None
    return {
        "bench": "overhead",
        "jobs": args.jobs,
        "workers": args.workers,
        "poll_delay_s": args.poll_delay,
        "http_transport": args.transport,
        "anchor_redis_checkout": args.anchor_checkout,
        "arq_noop": arq_res,
        "rounds": args.rounds,
        "arq_sdk_call": arq_sdk,  # the pair of the median round
        "routeq": rq,
        "throughput_ratio_routeq_over_arq": round(ratio, 3) if ratio else None,
        "throughput_target": 0.8,
        # routeq against arq doing only the model call: what routing, limits, caching and records cost;
        # the median over the rounds, each round's ratio beside it
        "throughput_ratio_routeq_over_arq_sdk_call": round(sdk_ratio, 3) if sdk_ratio else None,
        "throughput_ratio_by_round": round_ratios,
        # worker CPU per job, anchor over routeq (1.0: routeq's workers cost no more CPU per job)
        "worker_cpu_ratio_arq_sdk_over_routeq_by_round": cpu_ratios,
        "throughput_target_over_arq_sdk_call": 0.8,
        "enqueue_speedup_bulk_over_arq_loop": round(enq, 1) if enq else None,
        "enqueue_only": enq_only,
        "enqueue_target": 10,
        "profile_one_worker": prof,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_arq-worker":
        p = argparse.ArgumentParser()
        p.add_argument("--_arq-worker", dest="url")
        p.add_argument("--poll-delay", type=float)
        p.add_argument("--api")
        p.add_argument("--transport", choices=TRANSPORTS, default=DEFAULT_TRANSPORT)
        p.add_argument("--done-file")
        a = p.parse_args()
        run_arq_worker(a.url, a.poll_delay, a.api, a.transport, a.done_file)
        sys.exit(0)
    profiled_worker_mode()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--poll-delay", type=float, default=0.05)
    ap.add_argument("--profile-jobs", type=int, default=1000)
    ap.add_argument("--enqueue-reps", type=int, default=3)
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating rounds of the SDK-call anchor and routeq; the ratio is their median (default 3)",
    )
    ap.add_argument(
        "--anchor-checkout",
        choices=("stock", "concurrent"),
        default="stock",
        help="the arq anchors' Redis pool: redis-py's own (default), or routeq's concurrent checkout",
    )
    ap.add_argument("--profile-out", help="keep the worker's pstats file here (default: a temp file)")
    ap.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default=DEFAULT_TRANSPORT,
        help=f"the SDK's HTTP transport for routeq and the SDK-call anchor (default {DEFAULT_TRANSPORT})",
    )
    parsed = ap.parse_args()
    os.environ[ANCHOR_CHECKOUT_ENV] = parsed.anchor_checkout
    print(emit(asyncio.run(main(parsed))))
