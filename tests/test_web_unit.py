"""Fast checks of the UI's pure parts: auth decisions, the new aggregate fields, snapshot shaping."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from jobs.results import Attempt, Cost, JobResult, Usage, aggregate_increments, minute_of
from jobs.settings import Settings
from jobs.tiers import Tier
from worker.web import snapshot as shape
from worker.web.auth import AuthConfigError, is_loopback, make_auth
from worker.web.hub import RateWindow


def test_auth_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")
    with pytest.raises(AuthConfigError, match="ROUTEQ_UI_TOKEN"):
        make_auth(None, "127.0.0.1", no_auth=False)
    with pytest.raises(AuthConfigError, match="ROUTEQ_UI_TOKEN"):
        make_auth(SecretStr(""), "127.0.0.1", no_auth=False)
    with pytest.raises(AuthConfigError, match="loopback"):
        make_auth(SecretStr("t"), "0.0.0.0", no_auth=True)
    open_ = make_auth(None, "127.0.0.1", no_auth=True)
    assert open_.token is None and open_.accepts(None) and open_.csrf  # CSRF still guards POSTs
    a = make_auth(SecretStr("s3cret-token"), "0.0.0.0", no_auth=False)
    assert a.accepts("s3cret-token") and not a.accepts("s3cret-toke") and not a.accepts(None)
    assert a.csrf_ok(a.csrf) and not a.csrf_ok("x") and a.csrf != "s3cret-token"
    assert "s3cret" not in repr(a)
    # the same token gives every UI process the same CSRF token
    assert make_auth(SecretStr("s3cret-token"), "::1", no_auth=False).csrf == a.csrf


def test_ui_settings_keep_the_token_secret() -> None:
    s = Settings(ui_token="tok-XYZ", _env_file=None)  # type: ignore[call-arg]
    assert "tok-XYZ" not in repr(s) and "tok-XYZ" not in str(s.model_dump())
    assert s.ui_show_content is False and s.jaeger_url is None


def _attempt(n: int, tier: Tier, status: str, error_type: str | None = None, cost: int = 0) -> Attempt:
    return Attempt(
        n=n,
        tier=tier,
        model="m",
        status=status,  # type: ignore[arg-type]
        error_type=error_type,
        usage=Usage(input_tokens=10 if cost else 0),
        cost=Cost(input_pusd=cost),
    )


def test_aggregate_fields_for_faults_escalations_and_series() -> None:
    r = JobResult(
        job_id="j",
        batch="b",
        tenant="t",
        task="summarize",
        status="done",
        tier=Tier.sonnet,
        finished_at=6000.5,
        attempts=[
            _attempt(1, Tier.haiku, "error", "rate_limit"),
            _attempt(2, Tier.haiku, "error", "overloaded"),
            _attempt(3, Tier.haiku, "check_failed", "check_failed", cost=7),
            _attempt(4, Tier.sonnet, "ok", cost=11),
        ],
    )
    inc = aggregate_increments(r)
    assert inc["tier:haiku:http_429"] == 1 and inc["tier:haiku:http_529"] == 1
    assert "tier:sonnet:http_429" not in inc
    assert inc["esc:haiku:check_failed"] == 1
    m = minute_of(6000.5)
    assert m == 100
    assert inc[f"@m:{m}:haiku:cost"] == 7 and inc[f"@m:{m}:sonnet:cost"] == 11
    assert inc[f"@m:{m}:sonnet:jobs"] == 1 and f"@m:{m}:haiku:jobs" not in inc
    # the report's own fields are untouched by the additions
    assert inc["tier:haiku:cost_pusd"] == 7 and inc["tier:sonnet:calls"] == 1 and inc["tier:haiku:calls"] == 1


def test_series_escalations_and_dead_rows() -> None:
    agg = {
        "@m:100:haiku:cost": 2_000_000,
        "@m:100:haiku:jobs": 3,
        "@m:99:haiku:cost": 1_000_000,
        "@m:99:haiku:jobs": 1,
        "@m:100:opus:jobs": 1,
        "esc:haiku:overloaded": 2,
        "esc:sonnet:check_failed": 5,
        "cost_pusd": 3,
    }
    assert shape.series(agg) == {"haiku": [[5940, 1e-06, 1], [6000, 2e-06, 3]], "opus": [[6000, 0.0, 1]]}
    assert [(e["from_tier"], e["jobs"]) for e in shape.escalation_rows(agg)] == [("sonnet", 5), ("haiku", 2)]
    cause = {
        "error_type": "bad_request",
        "error": "no",
        "attempts": 1,
        "job": {"task": "qa", "prompt": "SECRET"},
    }
    hidden = shape.dead_row("j", cause, show_content=False)
    assert "SECRET" not in str(hidden) and hidden["task"] == "qa" and hidden["retryable"]
    assert shape.dead_row("j", cause, show_content=True)["prompt"] == "SECRET"
    assert not shape.dead_row("j", {"error_type": "invalid_payload"}, False)["retryable"]


def test_rate_window_and_eta() -> None:
    w = RateWindow(window_s=30)
    assert w(100.0, {"a": 0}) == {}
    rate = w(110.0, {"a": 50})
    assert rate["a"] == pytest.approx(5.0) and rate["*"] == pytest.approx(5.0)
    base = shape.batch_base("a", {b"enqueued": b"100", b"tenant": b"acme"}, {"done": 50}, 100, 0)
    row = shape.batch_row(base, 0, 120.0, 5.0)
    assert row["pending"] == 50 and row["eta_s"] == 10.0 and row["tenant"] == "acme"
    assert (
        shape.batch_row(shape.batch_base("a", {b"x": b"1"}, {"done": 2}, 2, 0), 0, 1.0, None)["eta_s"] == 0.0
    )
    with pytest.raises(ValueError, match="unknown key"):
        shape.sort_rows([row], "nope", descending=True)


def test_levers_show_batch_discount_absent_until_recorded() -> None:
    rep = {"baseline_pusd": 100, "cost_pusd": 40, "routing_savings_usd": 5e-11, "cache_savings_usd": 1e-11}
    lv = shape.levers(rep, shadow_pusd=10, batch_discount_pusd=None)
    assert lv["batch_discount_usd"] is None and lv["net_savings_usd"] == pytest.approx(5e-11)
    assert shape.levers(rep, 0, 20)["batch_discount_usd"] == pytest.approx(2e-11)


def test_sort_rows_by_any_key_with_missing_tenant() -> None:
    rows = [
        {"batch": "b", "tenant": None, "cost_usd": 2.0, "created_ms": 1},
        {"batch": "a", "tenant": "acme", "cost_usd": 5.0, "created_ms": 3},
        {"batch": "c", "tenant": "zeta", "cost_usd": 0.5, "created_ms": 2},
    ]
    assert [r["batch"] for r in shape.sort_rows(rows, "cost_usd", True)] == ["a", "b", "c"]
    assert [r["batch"] for r in shape.sort_rows(rows, "tenant", False)] == ["b", "a", "c"]
    assert [r["batch"] for r in shape.sort_rows(rows, "created_ms", True)] == ["a", "c", "b"]
