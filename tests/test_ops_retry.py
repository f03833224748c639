"""`routeq retry` gives a job that exhausted its attempts a fresh attempt budget (real workers, stand-in)."""

from __future__ import annotations

import asyncio
import time

import pytest

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.results import JobResult
from jobs.settings import Settings
from tests.helpers import Fleet, run_cli

pytestmark = pytest.mark.integration

ENV = {
    "ROUTEQ_LEARNED_ROUTER": "false",
    "ROUTEQ_CACHING": "false",
    "ROUTEQ_MAX_ATTEMPTS": "2",
    "ROUTEQ_BACKOFF_BASE_S": "0.05",
    "ROUTEQ_BACKOFF_MAX_S": "0.1",
}


async def failed_result(redis: object, s: Settings, job_id: str, attempts: int) -> JobResult:
    deadline = time.monotonic() + 30
    while True:
        raw = await redis.get(s.keys.result(job_id))  # type: ignore[attr-defined]
        if raw is not None:
            r = JobResult.model_validate_json(raw)
            if r.status == "failed" and len(r.attempts) >= attempts:
                return r
        assert time.monotonic() < deadline, "no failed result"
        await asyncio.sleep(0.05)


async def test_retry_gives_a_fresh_attempt_budget(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    with Fleet(redis_url, workers=1, **ENV):
        try:
            job = Job.model_validate(
                {
                    "task": "other",
                    "prompt": "Always down. [[mock:fault-500]]",
                    "constraints": {"tier": "haiku"},
                }
            )
            jid = (await Producer(redis, s).enqueue([job], batch="rb")).job_ids[0]
            first = await failed_result(redis, s, jid, 2)
            assert first.error is not None and first.error.startswith("exhausted 2 attempts")
            rc, out, err = await asyncio.to_thread(run_cli, "retry", "rb", "--dead")
            assert rc == 0 and "re-enqueued 1" in out, err
            await asyncio.sleep(0.2)
            again = await failed_result(redis, s, jid, 3)
            # two new calls, not one: the attempts before the retry no longer count toward the budget
            assert len(again.attempts) == 4, [a.status for a in again.attempts]
            assert again.error is not None and again.error.startswith("exhausted 2 attempts")
        finally:
            await redis.aclose()
