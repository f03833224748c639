"""JobRun's own decisions, without processes: park, hold, fail on a budget refusal, the attempt scope.

A Runtime built on fakeredis; only the parts each decision touches are real objects.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import fakeredis
import orjson
import pytest
from arq import Retry

from jobs.contract import Job
from jobs.settings import Settings
from jobs.tiers import Tier
from worker.pipeline.attempt import AttemptScope
from worker.pipeline.run import HOLD_RETRY_S, JobRun, Parked, Stopped


def make_run(redis: Any, **settings: Any) -> tuple[JobRun, list[Any]]:
    recorded: list[Any] = []

    async def record(result: Any, dead_cause: Any = None, arq: Any = None) -> bool:
        assert arq is None  # a run built without an arq job has no arq job to finish
        recorded.append((result, dead_cause))
        return True

    s = Settings(key_prefix="t", **settings)
    rt: Any = SimpleNamespace(
        settings=s,
        keys=s.keys,
        redis=redis,
        store=SimpleNamespace(record=record),
        metrics=SimpleNamespace(observe_result=lambda r: None),
        documents=None,
    )
    job = Job.model_validate({"task": "qa", "prompt": "p", "tags": {"batch": "b1"}}).with_ids("b1")
    return JobRun(rt, job, 1, None, job.to_wire(), fresh_from=2), recorded


@pytest.fixture
def redis() -> Any:
    return fakeredis.FakeAsyncRedis()


async def test_parking_puts_the_job_on_its_tier_queue_once(redis: Any) -> None:
    run, _ = make_run(redis)
    for _ in range(2):  # a re-run of an intake job parked before adds nothing
        with pytest.raises(Parked):
            await run.park(Tier.opus)
    key = f"{run.job_id}.opus"
    assert await redis.zrange("t:queue:opus", 0, -1) == [key.encode()]
    doc = orjson.loads(await redis.get(f"arq:job:{key}"))
    assert doc["k"] == {"parked": "opus", "fresh_from": 2} and doc["a"] == [run.wire]
    assert run.parked is Tier.opus


async def test_a_budget_refusal_holds_when_asked_and_is_counted_as_held(redis: Any) -> None:
    run, recorded = make_run(redis, budget_action="hold")
    with pytest.raises(Retry) as e:
        await run.refused_by_budget("over the cap")
    assert e.value.defer_score == HOLD_RETRY_S * 1000
    assert await redis.zcard("t:batch:b1:held") == 1 and not recorded


async def test_a_budget_refusal_fails_the_job_by_default(redis: Any) -> None:
    run, recorded = make_run(redis)
    with pytest.raises(Stopped):
        await run.refused_by_budget("over the cap")
    ((result, cause),) = recorded
    assert (result.status, result.error_type, result.error) == ("failed", "budget", "over the cap")
    assert cause["error_type"] == "budget" and await redis.zcard("t:batch:b1:held") == 0


class _Held:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    async def release(self, *args: Any) -> None:
        self.log.append(self.name)


async def test_the_attempt_scope_gives_back_what_it_holds_once_whatever_ends_it() -> None:
    log: list[str] = []
    rt: Any = SimpleNamespace(
        budgets=SimpleNamespace(release=lambda r: _Held(log, "budget").release()),
        warmer=SimpleNamespace(abandon=lambda h, token: _Held(log, "lead").release()),
    )
    with pytest.raises(Parked):
        async with AttemptScope(rt) as scope:
            scope.leader = SimpleNamespace(prefix_hash="h", token="t")  # type: ignore[assignment]
            scope.admission = _Held(log, "slot")  # type: ignore[assignment]
            scope.reservation = object()  # type: ignore[assignment]
            raise Parked()  # e.g. parked while holding a lead: followers must not wait on it
    assert log == ["slot", "budget", "lead"]
    await scope.release()  # released once: nothing is given back twice
    assert log == ["slot", "budget", "lead"]
