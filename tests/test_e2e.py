"""End to end: real redis-server, two real worker processes, the stand-in API over HTTP, the real SDK."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import orjson
import pytest

from jobs.connections import connect
from jobs.producer import Producer
from jobs.reports import batch_report, iter_results
from jobs.results import JobResult, Usage
from jobs.settings import Settings
from jobs.sources import parse_job
from jobs.tiers import TOP_TIER, Tier
from tests.helpers import Fleet, api_stats, wait_batch
from worker.policy import pricing
from worker.sandbox import corpus

pytestmark = pytest.mark.integration


async def test_batch_through_two_workers_reconciles(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    with Fleet(redis_url, workers=2) as fleet:
        try:
            jobs = [parse_job(j) for j in corpus.generate(60, seed=3)]
            res = await Producer(redis, s).enqueue(jobs, batch="e2e")
            assert res.enqueued == 60
            st = await wait_batch(s, redis, "e2e", timeout=90)
            assert st["done"] == 60, st
            results = [JobResult.model_validate_json(await redis.get(s.keys.result(j))) for j in res.job_ids]
            rep = await batch_report(redis, s.keys, "e2e")
            # report totals are the exact sum of the per-job results
            assert rep["cost_pusd"] == sum(r.cost.total_pusd for r in results)
            assert rep["baseline_pusd"] == sum(r.baseline_cost_pusd for r in results)
            for t, row in rep["tiers"].items():
                mine = [a for r in results for a in r.attempts if a.tier.value == t]
                assert row["input_tokens"] == sum(a.usage.input_tokens for a in mine)
                assert row["cache_read_tokens"] == sum(a.usage.cache_read_tokens for a in mine)
                assert row["cost_pusd"] == sum(a.cost.total_pusd for a in mine)
            # each job's cost is its usage priced by the table
            today = dt.datetime.now(dt.UTC).date()
            for r in results:
                for a in r.attempts:
                    assert a.cost == pricing.price_call(s.catalog.spec(a.model), a.usage, today)
                total = sum((a.usage for a in r.attempts), Usage())
                assert r.baseline_cost_pusd == pricing.baseline_cost(s.spec_for(TOP_TIER), total, today)
                assert r.route is not None and r.route.reason
            # the router used more than one tier and saved money against all-Opus
            assert len({r.tier for r in results}) >= 2
            assert rep["cost_pusd"] < rep["baseline_pusd"]
            # the stand-in billed exactly what routeq recorded
            stats = api_stats(fleet.api_url)["models"]
            for tier in Tier:
                model = s.model_for(tier)
                mine = [a for r in results for a in r.attempts if a.model == model and a.status != "error"]
                got = stats.get(model, {})
                assert got.get("output_tokens", 0) == sum(a.usage.output_tokens for a in mine)
                assert got.get("cache_read_tokens", 0) == sum(a.usage.cache_read_tokens for a in mine)
            rows = [row async for row in iter_results(redis, s.keys, "e2e")]
            assert {row["status"] for row in rows} == {"done"}
            assert {
                "job_id",
                "status",
                "tier",
                "model",
                "output",
                "usage",
                "cost_usd",
                "baseline_cost_usd",
                "route",
                "attempts",
                "latency_ms",
                "error",
            } <= set(rows[0])
        finally:
            await redis.aclose()


async def test_cli_enqueue_status_report(redis_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "jobs.jsonl"
    f.write_text('{"task":"classify","prompt":"spam?"}\nnot json\n{"task":"qa","prompt":"why?"}\n')
    env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "worker.cli"]
    p = subprocess.run(
        [*cmd, "enqueue", str(f), "--json", "--batch", "cli1"], capture_output=True, env=env, text=True
    )
    assert p.returncode == 1  # one line rejected
    assert orjson.loads(p.stdout) == {"batch": "cli1", "enqueued": 2, "duplicates": 0, "rejected": 1}
    announced, rejected = p.stderr.splitlines()[:2]
    assert announced == "enqueueing into batch cli1" and rejected.startswith("2: not JSON")
    p2 = subprocess.run(
        [*cmd, "enqueue", str(f), "--json", "--batch", "cli1"], capture_output=True, env=env, text=True
    )
    assert orjson.loads(p2.stdout)["duplicates"] == 2
    st = subprocess.run([*cmd, "status", "cli1", "--json"], capture_output=True, env=env, text=True)
    assert orjson.loads(st.stdout)["pending"] == 2
