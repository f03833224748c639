"""Process helpers for integration tests: a stand-in API, worker processes, waiting for a batch."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2

from jobs.reports import batch_status
from jobs.settings import Settings
from worker.sandbox.embedded import Child, start_mock_api, start_workers
from worker.sandbox.mock_api import RunningServer

# ``start`` (tests/conftest.py): start an in-process stand-in with MockConfig(**kw), stopped at the end.
StartFn = Callable[..., Awaitable[RunningServer]]


class FakeClock:
    """A clock the test moves by hand (``clock.now += 60``), for the stand-in's limits and batches."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def worker_env(redis_url: str, api_url: str, **extra: str) -> dict[str, str]:
    """A worker process's environment: this one without ROUTEQ_/OTEL_ variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTEQ_", "OTEL_"))}
    env.update(
        {
            "REDIS_URL": redis_url,
            "ANTHROPIC_BASE_URL": api_url,
            "ANTHROPIC_API_KEY": "sk-test-SECRET-abc123",
            "ROUTEQ_POLL_DELAY_S": "0.02",
            "ANTHROPIC_OPEN_TELEMETRY": "false",
        }
    )
    env.update(extra)
    return env


async def wait_batch(settings: Settings, redis: Any, batch: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = await batch_status(redis, settings.keys, batch)
        if st["pending"] == 0 and st["enqueued"] > 0:
            return st
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch} not finished: {st}")
        await asyncio.sleep(0.1)


def api_stats(api_url: str) -> dict[str, Any]:
    r = httpx2.get(f"{api_url}/_stats", timeout=5)
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


class Fleet:
    """A stand-in API and N worker processes; stopped (SIGTERM) at exit."""

    def __init__(self, redis_url: str, workers: int = 2, api_args: tuple[str, ...] = (), **env: str) -> None:
        self.api_url, self.api = start_mock_api(*api_args)
        self.env = worker_env(redis_url, self.api_url, **env)
        self.workers: list[Child] = start_workers(workers, self.env)

    def add_worker(self) -> Child:
        c = start_workers(1, self.env)[0]
        self.workers.append(c)
        return c

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.api.stop()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_cli(*args: str) -> tuple[int, str, str]:
    """`routeq ARGS` in this process (the CLI's own code path; a subprocess would re-import for seconds):
    (exit code, stdout, stderr)."""
    from worker import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(list(args))
        except SystemExit as e:
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


async def command_calls(redis: Any, command: str) -> int:
    """How many times the server has run ``command`` (``INFO commandstats``; scripts' commands included)."""
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
