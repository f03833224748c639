"""SIGTERM ends a worker within its drain timeout plus a few seconds, even when its Redis is gone."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from jobs.settings import Settings
from tests.helpers import worker_env
from worker.sandbox.embedded import EmbeddedRedis, start_mock_api, start_workers

pytestmark = pytest.mark.integration

DRAIN_S = 3


def test_sigterm_exits_when_redis_is_gone(tmp_path: Path) -> None:
    r = EmbeddedRedis().start()
    api_url, api = start_mock_api()
    env = worker_env(r.url, api_url, ROUTEQ_DRAIN_TIMEOUT_S=str(DRAIN_S), ROUTEQ_LEARNED_ROUTER="false")
    workers = start_workers(2, env, log_dir=tmp_path)
    try:
        client = redis.Redis.from_url(r.url)
        deadline = time.monotonic() + 30
        owners = Settings(_env_file=None).keys.recovery_owners  # type: ignore[call-arg]
        while client.scard(owners) < 2:  # both workers up and polling
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        client.close()
        r.stop()  # Redis goes away under idle workers
        time.sleep(0.5)
        t0 = time.monotonic()
        for w in workers:
            w.proc.send_signal(signal.SIGTERM)
        for w in workers:
            w.proc.wait(DRAIN_S + 10)
        took = time.monotonic() - t0
        assert took < DRAIN_S + 8, took
        logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("worker-*.log"))
        assert "Traceback" not in logs, logs[-3000:]
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
        api.stop()
        r.stop()
