"""Pure decisions of Message Batches mode: when a gathering set is due, what a result makes of its job."""

from __future__ import annotations

import pytest

from jobs.tiers import Tier
from worker.batches.gather import custom_id
from worker.batches.outcome import next_step
from worker.batches.submit import due
from worker.sandbox.mock_api.batches import CUSTOM_ID

LIMITS = {"max_requests": 100, "max_bytes": 10_000, "window_ms": 5_000.0}


@pytest.mark.parametrize(
    ("count", "size", "oldest", "now", "expected"),
    [
        (0, 0, None, 0.0, False),
        (1, 10, 1000.0, 1000.0, False),  # fresh and small: keep gathering
        (1, 10, 1000.0, 6000.0, True),  # the window passed
        (100, 10, 1000.0, 1000.0, True),  # full by count
        (5, 10_000, 1000.0, 1000.0, True),  # full by bytes
    ],
)
def test_due(count: int, size: int, oldest: float | None, now: float, expected: bool) -> None:
    assert due(count, size, oldest, now, **LIMITS) is expected  # type: ignore[arg-type]


def test_custom_ids_are_valid_stable_and_per_attempt() -> None:
    long_id = "a.b" * 40
    assert CUSTOM_ID.match(custom_id(long_id, 1))
    assert custom_id("j1", 1) == custom_id("j1", 1) != custom_id("j1", 2) != custom_id("j2", 1)


def test_succeeded_and_checked_is_done() -> None:
    assert next_step("succeeded", tier=Tier.haiku, ceiling=Tier.opus).kind == "done"


def test_failed_check_escalates_into_a_later_batch_or_realtime() -> None:
    s = next_step("succeeded", tier=Tier.haiku, ceiling=Tier.opus, check_failures=("json",), escalations=1)
    assert (s.kind, s.tier, s.via) == ("again", Tier.sonnet, "batch")
    s = next_step(
        "succeeded",
        tier=Tier.haiku,
        ceiling=Tier.opus,
        check_failures=("json",),
        escalations=1,
        route_now="realtime",
    )
    assert (s.kind, s.tier, s.via) == ("again", Tier.sonnet, "realtime")
    top = next_step(
        "succeeded", tier=Tier.sonnet, ceiling=Tier.sonnet, check_failures=("json",), escalations=1
    )
    assert (top.kind, top.error_type) == ("fail", "check_failed")
    spent = next_step(
        "succeeded", tier=Tier.haiku, ceiling=Tier.opus, check_failures=("json",), escalations=3
    )
    assert spent.kind == "fail"
    off = next_step(
        "succeeded", tier=Tier.haiku, ceiling=Tier.opus, check_failures=("json",), escalation=False
    )
    assert off.kind == "fail"


def test_invalid_request_fails_with_the_apis_message() -> None:
    s = next_step(
        "errored",
        tier=Tier.haiku,
        ceiling=Tier.opus,
        error_type="invalid_request_error",
        error_message="m: bad",
    )
    assert (s.kind, s.error_type, s.message) == ("fail", "invalid_request", "m: bad")


@pytest.mark.parametrize(
    ("result", "etype"), [("expired", None), ("errored", "api_error"), ("errored", "overloaded_error")]
)
def test_retryable_outcomes_run_again_until_attempts_run_out(result: str, etype: str | None) -> None:
    again = next_step(result, tier=Tier.sonnet, ceiling=Tier.opus, error_type=etype, errors=2, max_attempts=3)  # type: ignore[arg-type]
    assert (again.kind, again.tier, again.via) == ("again", Tier.sonnet, "batch")
    near = next_step(
        result, tier=Tier.sonnet, ceiling=Tier.opus, error_type=etype, errors=1, route_now="realtime"
    )  # type: ignore[arg-type]
    assert near.via == "realtime"
    out = next_step(result, tier=Tier.sonnet, ceiling=Tier.opus, error_type=etype, errors=3, max_attempts=3)  # type: ignore[arg-type]
    assert (
        out.kind == "fail"
        and out.error_type == (etype or "batch_expired")
        and "3 attempts" in (out.message or "")
    )


def test_canceled_by_the_user_ends_canceled_otherwise_runs_again() -> None:
    mine = next_step("canceled", tier=Tier.haiku, ceiling=Tier.opus, user_canceled=True)
    assert mine.kind == "canceled"  # an outcome of its own, not a failure
    s = next_step("canceled", tier=Tier.haiku, ceiling=Tier.opus, user_canceled=False)
    assert (s.kind, s.via) == ("again", "batch")
