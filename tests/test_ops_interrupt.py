"""Ctrl-C during `routeq enqueue` of a large JSONL: exact counts, the batch, a resume that adds the rest."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import redis

from jobs.settings import Settings

pytestmark = pytest.mark.integration

N = 60_000


def env_for(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTEQ_", "OTEL_"))}
    env["REDIS_URL"] = redis_url
    return env


def test_ctrl_c_mid_enqueue_reports_and_resumes(redis_url: str, tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    with big.open("wb") as f:
        for i in range(N):
            f.write(
                orjson.dumps({"task": "classify", "prompt": f"ticket {i}: my order never arrived"}) + b"\n"
            )
    env = env_for(redis_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "enqueue", str(big), "--tag", "team=ops"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the batch id comes before the first chunk is written
    assert first.startswith("enqueueing into batch "), first
    batch = first.split()[-1]
    keys = Settings(_env_file=None).keys  # type: ignore[call-arg]
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 30
    while client.scard(keys.batch_jobs(batch)) < 1000:
        assert time.monotonic() < deadline and proc.poll() is None, "the enqueue did not start"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=30)
    err = first + rest
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    line = next(ln for ln in err.splitlines() if ln.startswith("interrupted:"))
    enqueued = int(line.split("enqueued ")[1].split()[0])
    stored = client.scard(keys.batch_jobs(batch))
    assert 0 < enqueued == stored < N, (line, stored)
    assert f"into batch {batch}" in line
    resume = line.split("resume with: ")[1]
    argv = shlex.split(resume)
    assert argv[:2] == ["routeq", "enqueue"] and argv[-2:] == ["--batch", batch] and "team=ops" in argv
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", *argv[1:], "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    # only the rest is enqueued; what the first run wrote is recognised, not billed twice
    assert (summary["batch"], summary["enqueued"], summary["duplicates"]) == (batch, N - enqueued, enqueued)
    assert client.scard(keys.batch_jobs(batch)) == N
    client.close()
