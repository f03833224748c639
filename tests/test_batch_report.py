"""The batch discount as its own saving: aggregates of standard-rate cost and the report built on them."""

from __future__ import annotations

import datetime as dt

from jobs.catalog import load_catalog
from jobs.reports import build_report, render_report
from jobs.results import Attempt, JobResult, Usage, aggregate_increments
from jobs.tiers import Tier
from worker.policy.pricing import baseline_cost, price_call, price_response, uncached_cost

DAY = dt.date(2026, 11, 1)
CAT = load_catalog()
HAIKU, OPUS = CAT.spec("claude-haiku-4-5"), CAT.spec("claude-opus-4-5")
USAGE = Usage(input_tokens=300, output_tokens=80, cache_write_1h_tokens=4096, cache_read_tokens=8192)


def result(job_id: str, service_tier: str) -> JobResult:
    cost = price_response(HAIKU, USAGE, DAY, service_tier)
    attempt = Attempt(
        n=1,
        tier=Tier.haiku,
        model="claude-haiku-4-5",
        status="ok",
        usage=USAGE,
        cost=cost,
        service_tier=service_tier,
    )
    return JobResult(
        job_id=job_id,
        batch="b",
        tenant="t",
        task="qa",
        status="done",
        tier=Tier.haiku,
        usage=USAGE,
        cost=cost,
        baseline_cost_pusd=baseline_cost(OPUS, USAGE, DAY),
        uncached_cost_pusd=uncached_cost(HAIKU, USAGE, DAY),
        standard_cost_pusd=price_call(HAIKU, USAGE, DAY).total_pusd,
        service_tier=service_tier,
        attempts=[attempt],
    )


def agg_of(*results: JobResult) -> dict[str, int]:
    agg: dict[str, int] = {}
    for r in results:
        for k, v in aggregate_increments(r).items():
            agg[k] = agg.get(k, 0) + v
    return agg


def test_batch_saving_is_reported_apart_from_routing_and_caching() -> None:
    rep = build_report("b", agg_of(result("a", "batch"), result("b", "batch")))
    standard = 2 * price_call(HAIKU, USAGE, DAY).total_pusd
    assert rep["standard_pusd"] == standard and rep["cost_pusd"] * 2 == standard
    assert rep["batch_savings_usd"] == rep["cost_usd"]  # exactly half off
    parts = rep["routing_savings_usd"] + rep["cache_savings_usd"] + rep["batch_savings_usd"]
    assert abs(parts - (rep["baseline_cost_usd"] - rep["cost_usd"])) < 1e-9
    assert rep["cache_savings_usd"] > 0 and rep["routing_savings_usd"] > 0
    assert "batch discount $" in render_report(rep)


def test_realtime_jobs_show_no_batch_saving_and_old_aggregates_still_report() -> None:
    agg = agg_of(result("a", "standard"))
    assert build_report("b", agg)["batch_savings_usd"] == 0.0
    del agg["standard_pusd"]  # aggregates written before the field existed
    rep = build_report("b", agg)
    assert rep["batch_savings_usd"] == 0.0
    assert rep["cache_savings_usd"] == round(
        rep["baseline_cost_usd"] - rep["routing_savings_usd"] - rep["cost_usd"], 12
    )


def test_canceled_jobs_count_apart_from_failed_and_old_records_read_as_canceled() -> None:
    from jobs.reports import status_from

    base = result("j", "batch").model_dump(mode="json")
    unpaid = {**base, "attempts": [], "cost": {}, "usage": {}, "error": "canceled", "error_type": "canceled"}
    new = JobResult.model_validate({**unpaid, "status": "canceled"})
    old = JobResult.model_validate({**unpaid, "status": "failed"})  # before the status existed
    assert new.status == old.status == "canceled" and new.public()["status"] == "canceled"
    failed = JobResult.model_validate({**unpaid, "status": "failed", "error_type": "api_error"})
    assert failed.status == "failed"
    agg: dict[str, int] = {}
    for r in (new, failed, result("d", "batch")):
        for k, v in aggregate_increments(r).items():
            agg[k] = agg.get(k, 0) + v
    assert (agg["done"], agg["failed"], agg["canceled"]) == (1, 1, 1)
    st = status_from("b", {b"tenant": b"t"}, agg, accepted=4, dead=1)
    assert (st["canceled"], st["failed"], st["pending"]) == (1, 1, 1)
    rep = build_report("b", agg, st)
    assert rep["canceled"] == 1 and "1 canceled" in render_report(rep)
