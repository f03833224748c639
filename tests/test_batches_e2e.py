"""Message Batches mode end to end: real redis-server, real worker processes, the stand-in's Batches API."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobs.connections import connect
from jobs.contract import scoped_id
from jobs.producer import Producer
from jobs.reports import batch_report, batch_status
from jobs.results import JobResult
from jobs.settings import Settings
from jobs.sources import parse_job
from tests.helpers import Fleet, api_stats, run_cli, wait_batch
from worker.sandbox import corpus

pytestmark = pytest.mark.integration

FAST = {
    "ROUTEQ_BATCH_WINDOW_S": "0.3",
    "ROUTEQ_BATCH_POLL_S": "0.2",
    "ROUTEQ_BATCH_EXPECTED_LATENCY_S": "1",
    "ROUTEQ_BATCH_DEADLINE_MARGIN_S": "1",
    # Polling five times a second is far past the default batch RPM; its own test sets one.
    "ROUTEQ_BATCH_RPM": "none",
}


def with_mode(raw: dict[str, Any], mode: str) -> dict[str, Any]:
    return {**raw, "constraints": {**raw.get("constraints", {}), "mode": mode}}


async def results_of(redis: Any, s: Settings, ids: list[str]) -> list[JobResult]:
    return [JobResult.model_validate_json(await redis.get(s.keys.result(j))) for j in ids]


async def test_batch_mode_bills_half_with_no_realtime_calls(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    raw = list(corpus.generate(40, seed=5))
    try:
        with Fleet(redis_url, workers=2) as rt_fleet:
            res = await Producer(redis, s).enqueue(
                [parse_job(with_mode(j, "realtime")) for j in raw], batch="rt"
            )
            await wait_batch(s, redis, "rt", timeout=120)
            assert api_stats(rt_fleet.api_url)["batches"]["created"] == 0
        rt_rep = await batch_report(redis, s.keys, "rt")
        with Fleet(redis_url, workers=2, api_args=("--batch-latency-s", "0.5"), **FAST) as fleet:
            res = await Producer(redis, s).enqueue(
                [parse_job(with_mode(j, "batch")) for j in raw], batch="bm"
            )
            st = await wait_batch(s, redis, "bm", timeout=120)
            stats = api_stats(fleet.api_url)
        assert st["done"] + st["failed"] == 40
        rep = await batch_report(redis, s.keys, "bm")
        results = await results_of(redis, s, res.job_ids)
        paid = [a for r in results for a in r.attempts if a.status != "error"]
        assert paid and all(a.service_tier == "batch" for a in paid)
        assert all(r.service_tier == "batch" for r in results if r.status == "done")
        # Priced at exactly half of the same calls at standard rates, and the report says so.
        assert rep["cost_pusd"] * 2 == rep["standard_pusd"] == sum(r.standard_cost_pusd for r in results)
        assert rep["batch_savings_usd"] == pytest.approx(rep["cost_usd"], abs=1e-9)
        # No realtime call at all; every billed request was billed once.
        assert all(m["requests"] == 0 for m in stats["models"].values())
        b = stats["batches"]
        assert b["duplicate_requests"] == 0 and b["succeeded"] == len(paid)
        assert b["created"] < len(paid)  # gathered: fewer batches than requests
        ratio = rep["cost_pusd"] / rt_rep["cost_pusd"]
        assert 0.35 <= ratio <= 0.65, ratio
    finally:
        await redis.aclose()


async def test_each_outcome_type(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    jobs = {
        "ok": {"task": "summarize", "prompt": "Summarise: the cat sat on the mat."},
        "expired": {"task": "summarize", "prompt": "[[mock:batch-expired]] always expires"},
        "errored": {"task": "summarize", "prompt": "[[mock:batch-errored]] always a server error"},
        "invalid": {"task": "summarize", "prompt": "[[mock:fault-400]] refused as invalid"},
        "escalates": {
            "task": "extract",
            "prompt": "Reply in JSON. [[mock:bad-json:haiku]] name: Ada",
            "output": {"type": "json"},
            "constraints": {"tier": None, "min_tier": "haiku", "max_tier": "sonnet"},
        },
    }
    env = {**FAST, "ROUTEQ_MAX_ATTEMPTS": "3", "ROUTEQ_LEARNED_ROUTER": "false"}
    try:
        with Fleet(redis_url, workers=2, api_args=("--batch-latency-s", "0.3"), **env) as fleet:
            parsed = [parse_job({**with_mode(j, "batch"), "id": name}) for name, j in jobs.items()]
            await Producer(redis, s).enqueue(parsed, batch="outcomes")
            await wait_batch(s, redis, "outcomes", timeout=90)
            stats = api_stats(fleet.api_url)
        got = {r.id: r for r in await results_of(redis, s, [scoped_id("outcomes", j) for j in jobs])}
        assert got["ok"].status == "done" and got["ok"].attempts[-1].service_tier == "batch"
        for name, kind in (("expired", "batch_expired"), ("errored", "api_error")):
            r = got[name]
            assert r.status == "failed" and r.error_type == kind, r
            assert [a.error_type for a in r.attempts] == [kind] * 3  # re-run, counted as attempts
        inv = got["invalid"]
        assert inv.status == "failed" and inv.error_type == "invalid_request" and len(inv.attempts) == 1
        assert inv.error and "injected invalid_request_error" in inv.error  # the API's own message
        esc = got["escalates"]
        assert esc.status == "done", esc
        assert [(a.tier.value, a.status) for a in esc.attempts] == [
            ("haiku", "check_failed"),
            ("sonnet", "ok"),
        ]
        assert stats["batches"]["expired"] == 3 and stats["batches"]["duplicate_requests"] == 0
        assert all(m["requests"] == 0 for m in stats["models"].values())
    finally:
        await redis.aclose()


async def test_worker_killed_after_create_loses_and_doubles_nothing(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    env = {**FAST, "ROUTEQ_CALL_TIMEOUT_S": "2"}
    api = ("--batch-latency-s", "0.3", "--batch-create-delay-s", "5")
    try:
        with Fleet(redis_url, workers=1, api_args=api, **env) as fleet:
            jobs = [parse_job(with_mode(j, "batch")) for j in corpus.generate(12, seed=9)]
            await Producer(redis, s).enqueue(jobs, batch="crash")
            t0 = time.monotonic()
            while api_stats(fleet.api_url)["batches"]["created"] == 0:
                assert time.monotonic() - t0 < 30, "no batch was created"
                await asyncio.sleep(0.05)
            # The batch exists at the API; its create has not answered: the worker dies not knowing the id.
            os.kill(fleet.workers[0].proc.pid, signal.SIGKILL)
            fleet.workers[0].proc.wait()
            assert not await redis.scard(s.keys.api_batch_ids)
            fleet.add_worker()
            st = await wait_batch(s, redis, "crash", timeout=90)
            stats = api_stats(fleet.api_url)["batches"]
        assert st["done"] + st["failed"] == 12 and st["done"] >= 10
        assert stats["duplicate_requests"] == 0
        assert stats["created"] == 1 and stats["requests"] == 12  # adopted, never resubmitted
    finally:
        await redis.aclose()


async def test_cancel_ends_its_jobs_canceled_and_reruns_a_neighbours(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    env = {**FAST, "ROUTEQ_BATCH_WINDOW_S": "1.0"}
    mk = [{"task": "summarize", "prompt": f"Summarise item {i}: things happened."} for i in range(9)]

    async def routeq(*args: str) -> str:
        # In this process (a subprocess spends seconds importing, and the cancel must land in time).
        rc, out, err = await asyncio.to_thread(run_cli, *args)
        assert rc == 0, err
        return out

    async def results_cli(batch: str) -> list[dict[str, Any]]:
        out = tmp_path / f"{batch}.jsonl"
        await routeq("results", batch, "--out", str(out))
        return [orjson.loads(x) for x in out.read_text().splitlines()]

    try:
        with Fleet(redis_url, workers=2, api_args=("--batch-latency-s", "20"), **env) as fleet:
            for k, v in fleet.env.items():
                if k.startswith(("ROUTEQ_", "ANTHROPIC_", "REDIS_")):
                    monkeypatch.setenv(k, v)
            p = Producer(redis, s)
            # The neighbour first: the stand-in answers a batch's requests in order, so a cancel a few
            # seconds in has answered some of the neighbour's and none of cx's.
            await p.enqueue([parse_job(with_mode(j, "batch")) for j in mk[6:]], batch="nb")
            await p.enqueue([parse_job(with_mode(j, "batch")) for j in mk[:6]], batch="cx")
            t0 = time.monotonic()
            while (await batch_status(redis, s.keys, "cx"))["in_api_batch"] < 6 or not await redis.scard(
                s.keys.api_batch_ids
            ):
                assert time.monotonic() - t0 < 30, "no batch was submitted"
                await asyncio.sleep(0.05)
            st = orjson.loads(await routeq("status", "cx", "--json"))
            assert st["in_api_batch"] == 6 and st["pending"] == 6
            rows_cx = await results_cli("cx")
            assert [r["status"] for r in rows_cx] == ["in_api_batch"] * 6
            rows = orjson.loads(await routeq("batches", "--json"))
            assert rows and rows[0]["id"].startswith("msgbatch_") and rows[0]["requests"] >= 6
            assert "msgbatch_" in await routeq("batches")
            assert "API batches canceled" in await routeq("cancel", "cx")
            await wait_batch(s, redis, "cx", timeout=60)
            await wait_batch(s, redis, "nb", timeout=60)
            stats = api_stats(fleet.api_url)["batches"]
            st = orjson.loads(await routeq("status", "cx", "--json"))
            rows_cx = await results_cli("cx")
            rep = orjson.loads(await routeq("report", "cx", "--json"))
            dead = orjson.loads(await routeq("dead", "cx", "--json"))
        cx = await results_of(
            redis, s, [parse_job(with_mode(j, "batch")).with_ids("cx").job_id for j in mk[:6]]
        )
        # A request the stand-in had answered before the cancel reached it keeps its (paid) answer.
        canceled = [r for r in cx if r.status == "canceled"]
        answered = [r for r in cx if r.status == "done" and [a.status for a in r.attempts] == ["ok"]]
        assert len(canceled) + len(answered) == 6 and canceled, [r.status for r in cx]
        assert all(r.error_type == "canceled" and r.cost.total_pusd == 0 for r in canceled)
        # Canceled is an outcome of its own everywhere: not failed, not a dead letter to retry.
        assert (st["canceled"], st["failed"], st["dead"], st["pending"]) == (len(canceled), 0, 0, 0)
        assert sorted(r["status"] for r in rows_cx) == sorted(r.status for r in cx)
        assert (rep["canceled"], rep["failed"], rep["done"]) == (len(canceled), 0, len(answered))
        assert dead == {}
        nb = await results_of(
            redis, s, [parse_job(with_mode(j, "batch")).with_ids("nb").job_id for j in mk[6:]]
        )
        assert all(r.status == "done" for r in nb)  # canceled only because they shared the API batch: re-run
        assert stats["canceled"] >= len(canceled) and stats["duplicate_requests"] == 0
        assert (await batch_status(redis, s.keys, "cx"))["in_api_batch"] == 0
    finally:
        await redis.aclose()


async def test_queue_cap_holds_across_workers(redis_url: str) -> None:
    import anthropic

    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    cap = 4
    env = {**FAST, "ROUTEQ_BATCH_QUEUE_CAP": str(cap), "ROUTEQ_BATCH_WINDOW_S": "0.1"}
    # Two models, so two submitters share the cap.
    mk = [
        {"task": "summarize", "prompt": f"Summarise {i}: it rained.", "constraints": {"tier": t}}
        for i in range(6)
        for t in ("haiku", "sonnet")
    ]
    try:
        with Fleet(redis_url, workers=2, api_args=("--batch-latency-s", "0.5"), **env) as fleet:
            await Producer(redis, s).enqueue([parse_job(with_mode(j, "batch")) for j in mk], batch="cap")
            c = anthropic.AsyncAnthropic(base_url=fleet.api_url, api_key="k", max_retries=0)
            peak = 0
            t0 = time.monotonic()
            while (await batch_status(redis, s.keys, "cap"))["pending"] and time.monotonic() - t0 < 60:
                waiting = [
                    b async for b in c.messages.batches.list(limit=100) if b.processing_status != "ended"
                ]
                peak = max(peak, sum(b.request_counts.processing for b in waiting))
                await asyncio.sleep(0.02)
            await c.close()
            st = await wait_batch(s, redis, "cap", timeout=5)
            stats = api_stats(fleet.api_url)["batches"]
        assert st["done"] == len(mk)
        assert 0 < peak <= cap, peak
        assert stats["created"] >= len(mk) / cap and stats["duplicate_requests"] == 0
    finally:
        await redis.aclose()


async def test_budgets_hold_batch_rates_and_refuse_when_capped(redis_url: str) -> None:
    from decimal import Decimal

    from worker.fleet.budget import Budgets

    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    mk = [{"task": "summarize", "prompt": f"Summarise {i}: it rained all day."} for i in range(5)]
    try:
        budgets = Budgets(redis, s.keys)
        await budgets.set_cap("batch", "bud", Decimal("10"))
        await budgets.set_cap("batch", "broke", Decimal("0.000001"))
        with Fleet(redis_url, workers=2, api_args=("--batch-latency-s", "0.3"), **FAST) as fleet:
            res = await Producer(redis, s).enqueue(
                [parse_job(with_mode(j, "batch")) for j in mk], batch="bud"
            )
            await Producer(redis, s).enqueue([parse_job(with_mode(j, "batch")) for j in mk], batch="broke")
            await wait_batch(s, redis, "bud", timeout=60)
            await wait_batch(s, redis, "broke", timeout=60)
            stats = api_stats(fleet.api_url)["batches"]
        results = await results_of(redis, s, res.job_ids)
        spent = await redis.hgetall(s.keys.budget("batch", "bud"))
        assert int(spent[b"spent"]) == sum(r.cost.total_pusd for r in results) > 0  # charged at batch rates
        assert int(spent.get(b"reserved", b"0")) == 0  # every hold settled
        broke = (await batch_status(redis, s.keys, "broke"))["failed"]
        assert broke == 5 and stats["requests"] == 5  # refused before any request was sent
    finally:
        await redis.aclose()


async def test_auto_mode_goes_batch_only_when_the_deadline_leaves_room(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    # Expected batch latency 1 s + margin 1 s (FAST): a 1 s deadline is too near, a 1 h one is not.
    jobs = {
        "soon": {
            "task": "summarize",
            "prompt": "Summarise: soon.",
            "constraints": {"mode": "auto", "deadline": "1s"},
        },
        "later": {
            "task": "summarize",
            "prompt": "Summarise: later.",
            "constraints": {"mode": "auto", "deadline": "1h"},
        },
        "rt": {"task": "summarize", "prompt": "Summarise: now.", "constraints": {"mode": "realtime"}},
    }
    try:
        with Fleet(redis_url, workers=1, api_args=("--batch-latency-s", "0.3"), **FAST) as fleet:
            parsed = [parse_job({**j, "id": name}) for name, j in jobs.items()]
            await Producer(redis, s).enqueue(parsed, batch="auto")
            await wait_batch(s, redis, "auto", timeout=60)
            stats = api_stats(fleet.api_url)
        got = {r.id: r for r in await results_of(redis, s, [scoped_id("auto", j) for j in jobs])}
        assert got["later"].service_tier == "batch"
        assert got["soon"].service_tier == "standard" and got["rt"].service_tier == "standard"
        assert sum(m["requests"] for m in stats["models"].values()) == 2 and stats["batches"]["requests"] == 1
    finally:
        await redis.aclose()


async def test_expired_near_the_deadline_reruns_realtime(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    # Batch while now + 6 s <= deadline (8 s after enqueue): the first try goes into a batch, and once
    # 2 s have passed an expired request runs again realtime instead of in another batch.
    env = {**FAST, "ROUTEQ_BATCH_EXPECTED_LATENCY_S": "6", "ROUTEQ_BATCH_DEADLINE_MARGIN_S": "0"}
    job = {
        "id": "late",
        "task": "summarize",
        "prompt": "[[mock:batch-expired]] Summarise: the deadline nears.",
        "constraints": {"mode": "batch", "deadline": "8s"},
    }
    try:
        with Fleet(redis_url, workers=1, api_args=("--batch-latency-s", "0.3"), **env) as fleet:
            t0 = time.monotonic()
            while int((await redis.pubsub_numsub(s.keys.limits_channel))[0][1]) < 1:  # the worker is up
                assert time.monotonic() - t0 < 60
                await asyncio.sleep(0.05)
            await Producer(redis, s).enqueue([parse_job(job)], batch="late")
            await wait_batch(s, redis, "late", timeout=60)
            stats = api_stats(fleet.api_url)
        (r,) = await results_of(redis, s, [scoped_id("late", "late")])
        assert r.status == "done", r
        *tries, last = r.attempts
        assert tries and all(a.error_type == "batch_expired" for a in tries)
        assert last.status == "ok" and last.service_tier == "standard"
        assert sum(m["requests"] for m in stats["models"].values()) == 1
    finally:
        await redis.aclose()


async def test_batch_rpm_holds_across_worker_processes(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    rpm = 30
    # Polling every 0.2 s, three open submissions would make ~15 calls a second without the limit.
    env = {**FAST, "ROUTEQ_BATCH_RPM": str(rpm), "ROUTEQ_BATCH_WINDOW_S": "0.1"}
    mk = [
        {"task": "summarize", "prompt": f"Summarise {i}: it rained.", "constraints": {"tier": t}}
        for i in range(3)
        for t in ("haiku", "sonnet", "opus")
    ]
    try:
        t0 = time.monotonic()
        with Fleet(redis_url, workers=2, api_args=("--batch-latency-s", "4"), **env) as fleet:
            await Producer(redis, s).enqueue([parse_job(with_mode(j, "batch")) for j in mk], batch="rpm")
            st = await wait_batch(s, redis, "rpm", timeout=120)
            elapsed = time.monotonic() - t0
            stats = api_stats(fleet.api_url)["batches"]
        assert st["done"] == len(mk) and stats["duplicate_requests"] == 0
        # A full bucket (rpm calls) and its refill over the run bound the calls of both processes; two
        # buckets of their own would allow twice that.
        assert stats["calls"] <= rpm + rpm / 60 * elapsed + 1, (stats, elapsed)
        assert stats["max_calls_60s"] <= 2 * rpm
        assert stats["calls"] > rpm, stats  # the limit was what held them back: the burst was spent
    finally:
        await redis.aclose()
