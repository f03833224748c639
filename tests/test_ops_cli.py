"""The `routeq` command fails fast and clearly, and never destroys a user's file.

Every case runs the real command as a subprocess against a real redis-server (or none at all).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.results import JobResult
from jobs.settings import Settings
from worker.fleet.store import Store
from worker.sandbox.embedded import free_port, redis_server_binary, wait_port

pytestmark = pytest.mark.integration

ROUTEQ = [sys.executable, "-m", "worker.cli"]


def env_with(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTEQ_", "OTEL_", "REDIS_URL"))}
    env.update(extra)
    return env


def routeq(*args: str, cwd: Path | None = None, **env: str) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    p = subprocess.run(
        [*ROUTEQ, *args], env=env_with(**env), capture_output=True, text=True, timeout=60, cwd=cwd
    )
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_bad_configuration_is_one_line_and_fast(redis_url: str, tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    cases = {
        "unreachable": (("status", "b1"), {"REDIS_URL": dead}),
        "scheme": (("status", "b1"), {"REDIS_URL": "http://127.0.0.1:6379/0"}),
        "models_file": (
            ("status", "b1"),
            {"REDIS_URL": redis_url, "ROUTEQ_MODELS_FILE": "/nope/models.json"},
        ),
        "bad_int": (("status", "b1"), {"REDIS_URL": redis_url, "ROUTEQ_MAX_ATTEMPTS": "lots"}),
        "bad_nested": (("status", "b1"), {"REDIS_URL": redis_url, "ROUTEQ_LIMITS__OPUS__CONCURRENCY": "-3"}),
        "out_folder": (
            ("results", "b1", "--out", str(tmp_path / "missing" / "r.jsonl")),
            {"REDIS_URL": redis_url},
        ),
        "limits_unreachable": (("limits", "show"), {"REDIS_URL": dead}),
        "budget_unreachable": (("budget", "show"), {"REDIS_URL": dead}),
        "worker_no_key": (("worker",), {"REDIS_URL": redis_url}),
    }
    with ThreadPoolExecutor(4) as pool:
        got = dict(
            zip(cases, pool.map(lambda c: routeq(*c[0], cwd=tmp_path, **c[1]), cases.values()), strict=True)
        )
    port = dead.rsplit(":", 1)[1].split("/")[0]
    expect = {
        "unreachable": f"cannot reach Redis at 127.0.0.1:{port}",
        "scheme": "REDIS_URL must start with redis://",
        "models_file": "invalid setting ROUTEQ_MODELS_FILE: no such file",
        "bad_int": "invalid setting ROUTEQ_MAX_ATTEMPTS",
        "bad_nested": "invalid setting ROUTEQ_LIMITS__OPUS__CONCURRENCY",
        "out_folder": "does not exist",
        "limits_unreachable": f"cannot reach Redis at 127.0.0.1:{port}",
        "budget_unreachable": f"cannot reach Redis at 127.0.0.1:{port}",
        "worker_no_key": "set ANTHROPIC_API_KEY",
    }
    for name, (rc, _out, err, took) in got.items():
        line = one_line(err)
        assert rc == 2, (name, rc, err)
        assert expect[name] in line, (name, line)
        assert took < 10, (name, took)
    assert "tried" in got["unreachable"][2]


def test_wrong_redis_password_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--requirepass",
            "right",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc=proc)
        rc, _, err, took = routeq("status", "b1", REDIS_URL=f"redis://:wrong-SECRET@127.0.0.1:{port}/0")
        line = one_line(err)
        assert rc == 2 and f"Redis at 127.0.0.1:{port} refused the credentials" in line, err
        assert "wrong-SECRET" not in err and took < 10
    finally:
        proc.terminate()
        proc.wait(5)


def test_worker_waits_for_redis_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = env_with(REDIS_URL=dead, ANTHROPIC_API_KEY="sk-test", ANTHROPIC_BASE_URL="http://127.0.0.1:9")
    proc = subprocess.Popen([*ROUTEQ, "worker"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(5)  # long enough for several retries
        assert proc.poll() is None, "the worker gave up instead of retrying"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "cannot reach Redis" in ln]
    assert len(lines) == 1 and "retrying with backoff" in lines[0], err


def test_metrics_port_in_use_is_one_line(redis_url: str) -> None:
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        rc, _, err, _ = routeq(
            "worker", "--metrics-port", str(port), REDIS_URL=redis_url, ANTHROPIC_API_KEY="sk-test"
        )
    assert rc == 2 and f"metrics port {port} is not free" in one_line(err), err


async def _batch_with_results(redis_url: str, batch: str, n: int, finished: int) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        jobs = [Job.model_validate({"task": "other", "prompt": f"row {i} " + "x" * 300}) for i in range(n)]
        res = await Producer(redis, s).enqueue(jobs, batch=batch)
        store = Store(redis, s)
        for job_id in res.job_ids[:finished]:
            await store.record(
                JobResult(
                    job_id=job_id, batch=batch, tenant="default", task="other", status="done", output="ok"
                )
            )
    finally:
        await redis.aclose()


async def test_unknown_batch_is_one_error_everywhere_and_the_file_survives(
    redis_url: str, tmp_path: Path
) -> None:
    precious = tmp_path / "precious.jsonl"
    precious.write_text("my data\n")
    cmds = [
        ("status", "typo"),
        ("results", "typo", "--out", str(precious)),
        ("report", "typo"),
        ("dead", "typo"),
        ("retry", "typo"),
    ]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda c: routeq(*c, REDIS_URL=redis_url), cmds))
    for cmd, (rc, out, err, _) in zip(cmds, got, strict=True):
        assert rc == 1, (cmd, rc, out, err)
        assert one_line(err) == f"routeq {cmd[0]}: no batch 'typo'", (cmd, err)
    assert precious.read_text() == "my data\n"


async def test_results_of_a_running_batch_and_a_closed_pipe(redis_url: str, tmp_path: Path) -> None:
    await _batch_with_results(redis_url, "run1", 3000, 2990)
    out = tmp_path / "r.jsonl"
    out.write_text("old\n")
    rc, _, err, _ = routeq("results", "run1", "--out", str(out), REDIS_URL=redis_url)
    assert rc == 0, err
    assert len(out.read_text().splitlines()) == 2990
    assert "10 jobs of batch run1 still pending" in err
    assert not [p for p in tmp_path.iterdir() if p.name != "r.jsonl"]  # no temporary file left behind
    # `routeq results run1 | head -1`: the reader goes away early; the command ends quietly
    p = subprocess.Popen(
        f"{sys.executable} -m worker.cli results run1 | head -1",
        shell=True,
        env=env_with(REDIS_URL=redis_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first, err = p.communicate(timeout=60)
    assert len(first.splitlines()) == 1
    assert "BrokenPipe" not in err and "Traceback" not in err and "Exception ignored" not in err, err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["limits", "set", "haiku", "--rpm", "-5"], "-5 is out of range"),
        (["limits", "set", "haiku", "--itpm", "lots"], "'lots' is not a whole number"),
        (["limits", "set", "haiku", "--concurrency", "2000000"], "2000000 is out of range"),
        (["limits", "set", "haiku", "--concurrency", "0"], "0 is out of range"),
        (["demo", "--workers", "0"], "must be at least 1 (got 0)"),
        (["demo", "--jobs", "-5"], "must be at least 1 (got -5)"),
    ],
)
def test_absurd_values_are_refused_before_anything_runs(argv: list[str], said: str) -> None:
    from tests.helpers import run_cli

    rc, _, err = run_cli(*argv)
    assert rc == 2 and said in err and "Traceback" not in err, err


async def test_status_watch_shows_progress_until_the_batch_ends(redis_url: str) -> None:
    import asyncio

    await _batch_with_results(redis_url, "w1", 20, 5)
    proc = await asyncio.create_subprocess_exec(
        *ROUTEQ,
        "status",
        "w1",
        "--watch",
        "--interval",
        "0.2",
        env=env_with(REDIS_URL=redis_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # Wait for the first progress line rather than a fixed time: a loaded machine can take seconds
    # to start the CLI.
    assert proc.stderr is not None
    first = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
    while not first.startswith("w1 ["):
        assert first, "--watch ended before printing progress"
        first = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
    await asyncio.sleep(0.5)
    assert proc.returncode is None, "--watch returned while jobs were pending"
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        ids = sorted(m.decode() for m in await redis.smembers(s.keys.batch_jobs("w1")))
        store = Store(redis, s)
        for job_id in ids:  # the rest finish (recording twice is a no-op)
            await store.record(
                JobResult(
                    job_id=job_id, batch="w1", tenant="default", task="other", status="done", output="ok"
                )
            )
    finally:
        await redis.aclose()
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    bars = [first.rstrip("\n")] + [ln for ln in err.decode().splitlines() if ln.startswith("w1 [")]
    assert bars[0].split("]")[1].split()[0] == "5/20" and bars[-1].split("]")[1].split()[0] == "20/20", bars
    assert "done=20" in out.decode() and "pending=0" in out.decode()
