"""Shared helpers for the benchmarks in bench/ (scripts run by hand, loopback only).

Small and stable on purpose; other bench scripts import it::

    with Procs() as procs:
        redis = procs.redis()                               # EmbeddedRedis on a free port
        api_url = procs.api("--latency-ms", "200")          # the stand-in Messages API
        procs.workers(4, worker_env(redis.url, api_url, ROUTEQ_LEARNED_ROUTER="false"))
        await wait_workers(client, settings, 4)
        ...
        print(emit({...}))

Everything started through :class:`Procs` is stopped at exit (SIGTERM, then SIGKILL), also on errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/NAME.py` from anywhere
    sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from jobs.reports import batch_status, iter_results  # noqa: E402
from jobs.settings import Settings  # noqa: E402
from tests.helpers import worker_env as tests_worker_env  # noqa: E402
from worker.sandbox.embedded import Child, EmbeddedRedis, start_mock_api, start_workers  # noqa: E402


def worker_env(redis_url: str, api_url: str, **extra: str) -> dict[str, str]:
    """The tests' worker environment, with the bench's poll delay and the repo on PYTHONPATH."""
    bench: dict[str, str] = {
        "ANTHROPIC_API_KEY": "sk-bench",
        "ROUTEQ_POLL_DELAY_S": "0.05",
        "PYTHONPATH": str(ROOT),
    }
    return tests_worker_env(redis_url, api_url, **{**bench, **extra})


def api_config(models: dict[str, dict[str, Any]]) -> str:
    """A stand-in config file (``--config``) with per-model settings; returns its path."""
    fd, path = tempfile.mkstemp(prefix="routeq-bench-api-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"models": models}, f)
    return path


class Procs:
    """Owns every child process a benchmark starts; stops them all on exit."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self._redis: list[EmbeddedRedis] = []
        self._files: list[str] = []

    def redis(self) -> EmbeddedRedis:
        r = EmbeddedRedis().start()
        self._redis.append(r)
        return r

    def api(self, *args: str) -> str:
        url, child = start_mock_api(*args)
        self.children.append(child)
        return url

    def workers(self, n: int, env: dict[str, str], *args: str) -> list[Child]:
        got = start_workers(n, env, *args)
        self.children.extend(got)
        return got

    def spawn(self, argv: list[str], env: dict[str, str] | None = None, name: str = "child") -> Child:
        import subprocess

        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        child = Child(proc, name)
        self.children.append(child)
        return child

    def temp_file(self, path: str) -> str:
        self._files.append(path)
        return path

    def stop_children(self, children: list[Child] | None = None, timeout: float = 15.0) -> None:
        for c in children if children is not None else list(self.children):
            c.stop(timeout)

    def close(self) -> None:
        for c in reversed(self.children):
            try:
                c.stop(15.0)
            except Exception:  # best effort: kill whatever is left
                if c.proc.poll() is None:
                    c.proc.kill()
        for r in self._redis:
            r.stop()
        for f in self._files:
            with contextlib.suppress(OSError):
                os.unlink(f)

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def settings_for(redis_url: str, **kw: Any) -> Settings:
    return Settings(_env_file=None, redis_url=redis_url, **kw)  # type: ignore[call-arg]


async def wait_workers(redis: Redis, settings: Settings, n: int, timeout: float = 120.0) -> float:
    """Wait until ``n`` worker processes are up (each TierGate subscribes to the limits channel)."""
    t0 = time.monotonic()
    while True:
        got = await redis.pubsub_numsub(settings.keys.limits_channel)
        if int(got[0][1]) >= n:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"only {got[0][1]} of {n} workers up after {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def wait_batch(
    redis: Redis,
    settings: Settings,
    batch: str,
    total: int,
    timeout: float,
    every: float = 0.1,
    samples: list[tuple[float, int]] | None = None,
) -> dict[str, Any]:
    """Wait until ``total`` jobs of ``batch`` finished (done or failed) or ``timeout`` passed.

    Returns the batch status plus ``elapsed_s`` (from the call) and ``complete``. With ``samples``,
    appends (seconds since the call, finished count) at every poll, for steady-state rates.
    """
    t0 = time.monotonic()
    while True:
        st = await batch_status(redis, settings.keys, batch)
        finished = int(st["done"]) + int(st["failed"])
        now = time.monotonic() - t0
        if samples is not None:
            samples.append((now, finished))
        if finished >= total or now > timeout:
            return {**st, "elapsed_s": round(now, 3), "complete": finished >= total}
        await asyncio.sleep(every)


Sample = tuple[float, int]


def _steady_ends(samples: list[Sample], total: int, lo: float, hi: float) -> tuple[Sample, Sample] | None:
    """The samples when ``lo`` and ``hi`` of ``total`` had finished; the whole run if that window is
    missing or empty; None without two distinct moments."""
    a = next(((t, n) for t, n in samples if n >= lo * total), None)
    b = next(((t, n) for t, n in samples if n >= hi * total), None)
    if a is not None and b is not None and b[0] > a[0]:
        return a, b
    if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
        return samples[0], samples[-1]
    return None


def steady_rate(samples: list[Sample], total: int, lo: float = 0.1, hi: float = 0.9) -> float:
    """Jobs/s between the moments ``lo`` and ``hi`` of ``total`` had finished (start-up and tail cut)."""
    ends = _steady_ends(samples, total, lo, hi)
    if ends is None:
        return 0.0
    (ta, na), (tb, nb) = ends
    return (nb - na) / (tb - ta)


class ApiSampler:
    """Samples the stand-in's ``/_stats`` in the background: per model (time, in_flight_s, requests).

    ``occupancy(model, t_from, t_to)`` is the mean number of requests the API held open over a window
    (the integral of in-flight over time, differenced): how full a tier's slots really were. Times are
    seconds since ``start()``, the same base as :func:`wait_batch`'s samples when started just before it.
    """

    def __init__(self, api_url: str, every: float = 0.1) -> None:
        self.api_url, self.every = api_url, every
        self.points: list[tuple[float, dict[str, tuple[float, int]]]] = []
        self._task: asyncio.Task[None] | None = None
        self.wall0 = 0.0  # time.time() at start(): wall-clock moments minus this are on the samples' base

    async def _run(self, t0: float) -> None:
        while True:
            got = await asyncio.to_thread(api_stats, self.api_url)
            now = time.monotonic() - t0
            self.points.append(
                (now, {m: (v.get("in_flight_s", 0.0), v["requests"]) for m, v in got["models"].items()})
            )
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self.points.clear()
        self.wall0 = time.time()
        self._task = asyncio.ensure_future(self._run(time.monotonic()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _at(self, t: float) -> tuple[float, dict[str, tuple[float, int]]] | None:
        return min(self.points, key=lambda p: abs(p[0] - t), default=None)

    def window(self, model: str, t_from: float, t_to: float) -> dict[str, float]:
        """Mean requests open and mean seconds a request was open, between two moments."""
        a, b = self._at(t_from), self._at(t_to)
        if a is None or b is None or b[0] <= a[0]:
            return {"mean_in_flight": 0.0, "mean_call_s": 0.0}
        (fa, ra), (fb, rb) = a[1].get(model, (0.0, 0)), b[1].get(model, (0.0, 0))
        return {
            "mean_in_flight": round((fb - fa) / (b[0] - a[0]), 2),
            "mean_call_s": round((fb - fa) / (rb - ra), 4) if rb > ra else 0.0,
        }


def steady_from_times(done_at: list[float], lo: float = 0.1, hi: float = 0.9) -> tuple[float, float, float]:
    """Completions/s between the ``lo`` and ``hi`` quantiles of their own times (start-up and tail cut),
    and those two moments. Exact: no poll interval, and no lag of a count read from a report (a batch's
    aggregates are flushed every ~100 ms per worker, which moved a polled rate by ~2% either way)."""
    t = sorted(done_at)
    i, j = int(lo * (len(t) - 1)), int(hi * (len(t) - 1))
    if j <= i or t[j] <= t[i]:
        return 0.0, 0.0, 0.0
    return (j - i) / (t[j] - t[i]), t[i], t[j]


async def finish_times(redis: Redis, settings: Settings, batch: str) -> list[float]:
    """When each finished job of ``batch`` finished (its result's ``finished_at``, wall clock)."""
    return [r["finished_at"] async for r in iter_results(redis, settings.keys, batch) if r.get("finished_at")]


def http_json(url: str, body: Any = None, timeout: float = 10.0) -> Any:
    """GET (no body) or POST (JSON body) on the stand-in's control endpoints."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def api_stats(api_url: str) -> dict[str, Any]:
    got: dict[str, Any] = http_json(f"{api_url}/_stats")
    return got


def api_reset(api_url: str) -> None:
    http_json(f"{api_url}/_reset", {})


def rss_kb(pid: int) -> int:
    """Resident set size of a process, in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def command_counts(redis: Redis) -> dict[str, int]:
    """Redis commands served so far, by command (``INFO commandstats``); diff two reads for a phase."""
    info: dict[str, Any] = await redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


class BackgroundSampler:
    """Runs ``_run`` (a loop appending to ``points``) as a task between :meth:`start` and :meth:`halt`."""

    points: list[Any]

    def __init__(self) -> None:
        self.points = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.points.clear()
        self._task = asyncio.ensure_future(self._run())

    async def halt(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class CommandSampler(BackgroundSampler):
    """Reads ``INFO commandstats`` every ``every`` s in the background (on its own client), so a phase's
    commands per job can be taken over the same steady window as its throughput (:meth:`per_job`)."""

    points: list[tuple[float, dict[str, int]]]  # (monotonic seconds, counts)

    def __init__(self, url: str, every: float = 0.2) -> None:
        super().__init__()
        self.url, self.every = url, every

    async def _run(self) -> None:
        redis = Redis.from_url(self.url)
        try:
            while True:
                self.points.append((time.monotonic(), await command_counts(redis)))
                await asyncio.sleep(self.every)
        finally:
            await redis.aclose()

    def per_job(
        self, samples: list[Sample], total: int, t0: float, poll: dict[str, int], polls_per_s: float
    ) -> float | None:
        """Commands per job finished between the readings nearest the steady window's ends, less the
        benchmark's own progress polls (``poll``: one poll's commands, ``polls_per_s`` of them)."""
        ends = _steady_ends(samples, total, 0.1, 0.9)
        if ends is None or len(self.points) < 2:
            return None
        (ta, na), (tb, nb) = ends

        def near(t: float) -> tuple[float, dict[str, int]]:
            return min(self.points, key=lambda p: abs(p[0] - t0 - t))

        (pa, ca), (pb, cb) = near(ta), near(tb)
        if pb <= pa:
            return None
        jobs = (nb - na) / (tb - ta) * (pb - pa)  # jobs finished between the two readings
        own = sum(poll.values()) * polls_per_s * (pb - pa)
        n = sum(cb.get(k, 0) - ca.get(k, 0) for k in cb if k != "info") - own
        return round(n / jobs, 2) if jobs > 0 else None


def per_job_commands(
    before: dict[str, int],
    after: dict[str, int],
    jobs: int,
    top: int = 12,
    minus: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Commands per job between two :func:`command_counts` reads: total and the most frequent.

    ``minus``: commands to leave out, by command (the benchmark's own progress polls, see
    :func:`poll_commands`)."""
    diff = {k: after.get(k, 0) - before.get(k, 0) - (minus or {}).get(k, 0) for k in after}
    diff = {k: v for k, v in diff.items() if v > 0 and k != "info"}
    top_items = sorted(diff.items(), key=lambda kv: -kv[1])[:top]
    return {
        "total": round(sum(diff.values()) / max(1, jobs), 2),
        "by_command": {k: round(v / max(1, jobs), 2) for k, v in top_items},
    }


async def poll_commands(
    redis: Redis, poll: Callable[[], Awaitable[object]], times: int = 1
) -> dict[str, int]:
    """The Redis commands ``times`` calls of a benchmark's own progress poll send, measured on one call:
    what to pass :func:`per_job_commands` as ``minus`` so a phase counts its workers' commands only."""
    a = await command_counts(redis)
    await poll()
    b = await command_counts(redis)
    return {k: (b[k] - a.get(k, 0)) * times for k in b if k != "info" and b[k] > a.get(k, 0)}


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def emit(obj: dict[str, Any]) -> str:
    """The one JSON object a benchmark prints."""
    return json.dumps(obj, indent=2, sort_keys=False, default=str)


class CpuSampler(BackgroundSampler):
    """Samples the CPU time (user + system) a set of processes has used, in the background.

    ``per_job_ms(samples, total)`` is the CPU spent per job finished over :func:`steady_rate`'s window of
    a :func:`wait_batch`-style sample list whose clock started at ``t0`` (a ``time.monotonic()`` reading):
    start-up and the tail are left out, as they are for throughput.
    """

    points: list[tuple[float, float]]  # (monotonic seconds, CPU seconds of all pids)

    def __init__(self, pids: list[int], every: float = 0.05) -> None:
        super().__init__()
        self.pids, self.every = pids, every

    def read(self) -> float:
        return sum(cpu_s(p) for p in self.pids)

    async def _run(self) -> None:
        while True:
            self.points.append((time.monotonic(), self.read()))
            await asyncio.sleep(self.every)

    async def stop(self) -> float:
        """Stop sampling; the processes' CPU seconds so far."""
        await self.halt()
        last = self.read()
        self.points.append((time.monotonic(), last))
        return last

    def _at(self, t: float) -> float:
        return min(self.points, key=lambda p: abs(p[0] - t))[1] if self.points else 0.0

    def per_job_ms(self, samples: list[Sample], total: int, t0: float) -> float:
        ends = _steady_ends(samples, total, 0.1, 0.9)
        if ends is None or not self.points:
            return 0.0
        (ta, na), (tb, nb) = ends
        if nb <= na:
            return 0.0
        return 1000.0 * (self._at(t0 + tb) - self._at(t0 + ta)) / (nb - na)


# --- worker profiles ---------------------------------------------------------------------------------


PROFILED_WORKER = "--_profiled-worker"


def profiled_worker_mode() -> None:
    """In a benchmark's child started by :func:`start_profiled_worker`: run the worker, then exit."""
    if len(sys.argv) > 2 and sys.argv[1] == PROFILED_WORKER:
        run_profiled_worker(sys.argv[2])
        sys.exit(0)


def start_profiled_worker(
    procs: Procs, script: str, env: dict[str, str], keep: str | None = None
) -> tuple[Child, str]:
    """``script`` re-run as a profiled ``routeq worker``; returns it and the profile's path (``keep``, else
    a temp file removed at exit), written by the child when it stops: its presence means it is complete."""
    if keep:
        out = keep
        Path(out).unlink(missing_ok=True)
    else:
        fd, out = tempfile.mkstemp(prefix="routeq-prof-", suffix=".pstats")
        os.close(fd)
        os.unlink(out)
        procs.temp_file(out)
    return procs.spawn([sys.executable, script, PROFILED_WORKER, out], env, "profiled"), out


def profiled_costs(procs: Procs, kid: Child, out: str, st: dict[str, Any]) -> dict[str, Any]:
    """Stop the profiled worker; its batch's ``st`` (a :func:`wait_batch` status) and its top costs."""
    procs.stop_children([kid], timeout=60)
    if not Path(out).exists():
        return {"error": "profile not written"}
    return {"jobs": st["done"], "elapsed_s": st["elapsed_s"], **top_costs(out)}


def run_profiled_worker(out: str) -> None:
    """A ``routeq worker`` under cProfile, written to ``out`` when it stops (a benchmark's child mode)."""
    import worker.app  # noqa: F401  (imports are start-up, not per-job cost: keep them out)
    from worker import cli

    prof = cProfile.Profile()
    prof.enable()
    try:
        cli.main(["worker"])
    finally:
        prof.disable()
        prof.dump_stats(out)


def top_costs(path: str, n: int = 15) -> dict[str, Any]:
    """A worker profile's top self-time functions and the pipeline stages' cumulative time."""
    st = pstats.Stats(path)
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    rows = []
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in raw.items():
        rows.append((file, line, fn, nc, tt, ct))

    def label(r: tuple[Any, ...]) -> str:
        f = str(r[0])
        for marker in ("/site-packages/", "/work/main/", "/lib/python3.11/"):
            if marker in f:
                f = f.split(marker, 1)[1]
        return f"{f}:{r[1]}({r[2]})"

    total = sum(r[4] for r in rows)
    by_tt = sorted(rows, key=lambda r: -r[4])[:n]
    stages = {}
    wanted = {
        "worker/pipeline/run.py": (
            "process_job",
            "run",
            "route",
            "loop",
            "plan",
            "admit",
            "save",
            "finish_done",
            "park",
        ),
        "worker/pipeline/intake.py": ("parse_payload", "park"),
        "worker/fleet/store.py": ("load_state", "save_attempt_into", "record"),
        "worker/fleet/tier_gate.py": ("try_admit", "admit", "_queue_release"),
        "worker/fleet/arq_worker.py": ("claim_ready",),
        "worker/pipeline/call.py": ("call", "priced_call"),
        "worker/observe/tracing.py": ("attempt_span", "genai_span", "record_genai_result"),
        "arq/worker.py": ("run_job", "finish_job", "start_jobs", "_poll_iteration"),
        "worker/policy/scorer.py": ("score",),
        "jobs/contract.py": ("from_wire",),
    }
    for r in rows:
        for suffix, fns in wanted.items():
            if str(r[0]).endswith(suffix) and r[2] in fns:
                stages[label(r)] = {"calls": r[3], "cum_s": round(r[5], 3)}
    return {
        "total_cpu_s": round(total, 2),
        "top_tottime": [{"fn": label(r), "calls": r[3], "self_s": round(r[4], 3)} for r in by_tt],
        "stages_cumulative": dict(sorted(stages.items(), key=lambda kv: -kv[1]["cum_s"])),
    }
