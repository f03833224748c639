"""Every API fault path end to end: real worker processes, the real SDK, the stand-in's injected faults.

Three streams run at once, each on its own tier so that fleet-wide tier cooldowns (429/529) of one do not
slow the others:

* sonnet (markers in the prompt, every request faults): non-retryable 400/403 and the spend-limit 429
  fail at once with the API's message; a persistent 500 is retried up to ROUTEQ_MAX_ATTEMPTS, then dead;
  a persistent 529 on sonnet escalates to opus when the job allows it.
* haiku (``POST /_faults`` scoped to haiku, one kind at a time, cleared after the first failed attempt):
  each retryable kind — 429 with and without retry-after, 529, 500, 503, 504, timeout, connection
  reset — succeeds after retrying, with every attempt in the job's trace; then a 403 dead letter is shown
  by ``routeq dead`` and re-run to completion by ``routeq retry --dead``.
* A 401 pauses the fleet instead of failing jobs: ``tests/test_ops_auth.py``.
* opus: a small batch budget; jobs over the cap fail with a clear reason and spend stays under the cap.

The workers use the default HTTP transport (aiohttp); ``tests/test_transport_faults.py`` shows every one of
these faults classifies the same on httpx, and ``tests/test_ops_outage.py`` runs real workers on both.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx2
import orjson
import pytest

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.reports import batch_report
from jobs.results import Attempt, JobResult
from jobs.settings import Settings
from tests.helpers import Fleet, api_stats, run_cli, wait_batch
from tests.test_chaos import wait_workers
from worker.fleet.store import parse_calls

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 8
ENV = {
    "ROUTEQ_LEARNED_ROUTER": "false",
    "ROUTEQ_CACHING": "false",
    "ROUTEQ_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "ROUTEQ_BACKOFF_BASE_S": "0.3",
    "ROUTEQ_BACKOFF_MAX_S": "1.0",
    "ROUTEQ_CALL_TIMEOUT_S": "1",
    "ROUTEQ_OVERLOAD_ESCALATE_AFTER": "2",
    "ROUTEQ_BUDGET_ACTION": "fail",
}

# kind injected on haiku -> routeq's fault kind recorded on the failed attempt(s)
RETRYABLE = {
    "429": "rate_limit",
    "429noretry": "rate_limit",
    "529": "overloaded",
    "500": "server",
    "503": "server",
    "504": "timeout",
    "timeout": "timeout",
    "reset": "connection",
}


def job(prompt: str, tier: str | None = None, low: str | None = None, high: str | None = None) -> Job:
    cons: dict[str, str] = {}
    if tier:
        cons["tier"] = tier
    if low:
        cons["min_tier"] = low
    if high:
        cons["max_tier"] = high
    return Job.model_validate({"task": "other", "prompt": prompt, "constraints": cons})


def set_faults(api_url: str, spec: str) -> None:
    httpx2.post(f"{api_url}/_faults", json={"spec": spec}, timeout=5).raise_for_status()


async def result_of(redis: Any, s: Settings, job_id: str) -> JobResult | None:
    raw = await redis.get(s.keys.result(job_id))
    return None if raw is None else JobResult.model_validate_json(raw)


async def wait_result(redis: Any, s: Settings, job_id: str, timeout: float = 30.0) -> JobResult:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await result_of(redis, s, job_id)
        if got is not None:
            return got
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no result for {job_id}")


async def wait_attempts(redis: Any, s: Settings, job_id: str, n: int, timeout: float = 20.0) -> list[Attempt]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attempts, _ = parse_calls(await redis.hgetall(s.keys.calls(job_id)))
        if len(attempts) >= n:
            return attempts
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{job_id}: fewer than {n} attempts")


async def assert_reconciles(redis: Any, s: Settings, batch: str, ids: list[str]) -> None:
    results = [await result_of(redis, s, j) for j in ids]
    assert all(r is not None for r in results)
    rep = await batch_report(redis, s.keys, batch)
    assert rep["cost_pusd"] == sum(r.cost.total_pusd for r in results if r is not None)
    assert rep["done"] + rep["failed"] == len(ids)
    for t, row in rep["tiers"].items():
        calls = [a for r in results if r is not None for a in r.attempts if a.tier.value == t]
        assert row["output_tokens"] == sum(a.usage.output_tokens for a in calls)
        assert row["cost_pusd"] == sum(a.cost.total_pusd for a in calls)


async def test_fault_paths_end_to_end(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    with Fleet(redis_url, workers=2, **ENV) as fleet:
        try:
            await wait_workers(redis, s, 2)
            prod = Producer(redis, s)
            # --- opus: a batch budget of $0.1; each job reserves up to ~$0.026 ------------------
            rc, _, err = await asyncio.to_thread(run_cli, "budget", "set", "--batch", "fbud", "--usd", "0.1")
            assert rc == 0, err
            # workers learn which budgets carry a cap at most once a second (a new cap binds within ~1 s)
            await asyncio.sleep(1.2)
            bud_jobs = [job(f"Budget item {i}: write a short paragraph.", tier="opus") for i in range(12)]
            bud = await prod.enqueue(bud_jobs, batch="fbud")
            # --- sonnet: markers ----------------------------------------------------------------
            marked = {
                "bad_request": job("Do it. [[mock:fault-400]]", tier="sonnet"),
                "permission": job("Do it. [[mock:fault-403]]", tier="sonnet"),
                "spend_limit": job("Do it. [[mock:fault-spend]]", tier="sonnet"),
                "server": job("Do it. [[mock:fault-500]]", tier="sonnet"),
                "escalate": job("Do it. [[mock:fault-529:sonnet]]", low="sonnet", high="opus"),
            }
            fa = await prod.enqueue(list(marked.values()), batch="fa")
            assert fa.enqueued == len(marked)

            # --- haiku: one retryable kind at a time -------------------------------------------
            fb_ids: list[str] = []
            for kind, fault_kind in RETRYABLE.items():
                set_faults(fleet.api_url, f"haiku:{kind}=1")
                j = job(f"Retry case {kind}: answer briefly.", tier="haiku")
                jid = (await prod.enqueue([j], batch="fb")).job_ids[0]
                fb_ids.append(jid)
                first = await wait_attempts(redis, s, jid, 1)
                set_faults(fleet.api_url, "")
                r = await wait_result(redis, s, jid)
                assert r.status == "done", (kind, r.error)
                assert r.attempts[-1].status == "ok"
                errors = r.attempts[:-1]
                assert 1 <= len(errors) < MAX_ATTEMPTS, (kind, r.attempts)
                assert {a.error_type for a in errors} == {fault_kind}, (kind, errors)
                assert first[0].error_type == fault_kind
                if kind == "429":  # retry-after: 1 is honoured between the attempts
                    assert r.attempts[1].started_at - r.attempts[0].started_at >= 0.9
                # the trace in the result is the stored attempt list, and it is all billed once
                assert len(r.attempts) == len(parse_calls(await redis.hgetall(s.keys.calls(jid)))[0])
                assert api_stats(fleet.api_url)["jobs"].get(jid) == 1

            # --- haiku: a dead letter, `routeq dead`, `routeq retry --dead` ---------------------
            set_faults(fleet.api_url, "haiku:403=1")
            dl = (
                await prod.enqueue([job("Dead letter case: answer briefly.", tier="haiku")], batch="fb")
            ).job_ids[0]
            fb_ids.append(dl)
            r = await wait_result(redis, s, dl)
            set_faults(fleet.api_url, "")
            assert r.status == "failed" and r.error_type == "permission" and len(r.attempts) == 1
            rc, out, err = await asyncio.to_thread(run_cli, "dead", "fb", "--json")
            assert rc == 0, err
            dead = orjson.loads(out)
            assert set(dead) == {dl}
            assert dead[dl]["error_type"] == "permission" and "permission" in dead[dl]["error"]
            rc, out, err = await asyncio.to_thread(run_cli, "retry", "fb", "--dead")
            assert rc == 0 and "re-enqueued 1" in out, (out, err)
            deadline = time.monotonic() + 30
            while (r2 := await result_of(redis, s, dl)) is None or r2.status != "done":
                assert time.monotonic() < deadline, "retried job did not complete"
                await asyncio.sleep(0.05)
            assert [a.status for a in r2.attempts] == ["error", "ok"]  # the old attempt stays in the trace
            assert await redis.hlen(s.keys.batch_dead("fb")) == 0
            # a busy worker applies its aggregate increments up to ~100 ms after the result is stored
            st = await wait_batch(s, redis, "fb", timeout=5)
            assert (st["done"], st["failed"], st["pending"]) == (len(fb_ids), 0, 0), st
            await assert_reconciles(redis, s, "fb", fb_ids)

            # --- sonnet outcomes ----------------------------------------------------------------
            by_kind = dict(zip(marked, fa.job_ids, strict=True))
            messages = {
                "bad_request": "injected invalid request",
                "permission": "does not have permission",
                "spend_limit": "usage limits",
            }
            for kind, text in messages.items():
                r = await wait_result(redis, s, by_kind[kind])
                assert r.status == "failed" and r.error_type == kind, (kind, r)
                assert len(r.attempts) == 1, (kind, r.attempts)  # failed at once, no retry
                assert text in (r.error or ""), (kind, r.error)
            r = await wait_result(redis, s, by_kind["server"])
            assert r.status == "failed" and r.error_type == "server"
            assert len(r.attempts) == MAX_ATTEMPTS and (r.error or "").startswith(f"exhausted {MAX_ATTEMPTS}")
            r = await wait_result(redis, s, by_kind["escalate"])
            assert r.status == "done" and r.tier is not None and r.tier.value == "opus", r
            # >= 2: a job parked by the 529 cooldown restarts its consecutive-overload count (see report)
            trail = [(a.tier.value, a.error_type) for a in r.attempts]
            assert trail[-1] == ("opus", None) and len(trail) >= 3, trail
            assert set(trail[:-1]) == {("sonnet", "overloaded")}, trail
            dead_fa = orjson.loads((await asyncio.to_thread(run_cli, "dead", "fa", "--json"))[1])
            assert set(dead_fa) == {by_kind[k] for k in (*messages, "server")}
            assert all(c["error"] and c["error_type"] for c in dead_fa.values())
            await assert_reconciles(redis, s, "fa", fa.job_ids)

            # --- opus: the budget ---------------------------------------------------------------
            outcomes = [await wait_result(redis, s, j) for j in bud.job_ids]
            done = [r for r in outcomes if r.status == "done"]
            refused = [r for r in outcomes if r.status == "failed"]
            assert done and refused, [r.status for r in outcomes]
            assert all(r.error_type == "budget" and "budget" in (r.error or "") for r in refused)
            assert all(not r.attempts for r in refused)  # refused before any call: nothing billed
            cap = 100_000_000_000  # $0.1 in pico-USD
            spent = sum(r.cost.total_pusd for r in done)
            assert 0 < spent <= cap
            await assert_reconciles(redis, s, "fbud", bud.job_ids)
        finally:
            await redis.aclose()
