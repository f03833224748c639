"""What a Message Batch result makes of its job (pure): done, failed, or another request (batch/realtime)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jobs.tiers import Tier
from worker.batches.decide import Route

ResultType = Literal["succeeded", "errored", "canceled", "expired"]


@dataclass(frozen=True, slots=True)
class Step:
    kind: Literal["done", "fail", "canceled", "again"]
    tier: Tier
    via: Route = "batch"  # for "again": into a later batch, or realtime near the deadline
    error_type: str | None = None
    message: str | None = None


def next_step(
    result: ResultType,
    *,
    tier: Tier,
    ceiling: Tier,
    error_type: str | None = None,
    error_message: str | None = None,
    check_failures: tuple[str, ...] = (),
    escalation: bool = True,
    escalations: int = 0,
    max_escalations: int = 2,
    errors: int = 0,
    max_attempts: int = 6,
    route_now: Route = "batch",
    user_canceled: bool = True,
) -> Step:
    """``errors``/``escalations`` count the job's attempts so far, this result's included.

    ``user_canceled``: the job's own routeq batch was canceled. A request canceled only because it
    shared an API batch with a canceled routeq batch runs again.
    """
    if result == "succeeded":
        if not check_failures:
            return Step("done", tier)
        up = tier.next_up()
        if escalation and up is not None and tier.rank < ceiling.rank and escalations <= max_escalations:
            return Step("again", Tier(up), route_now)
        return Step(
            "fail",
            tier,
            error_type="check_failed",
            message=f"answer failed checks: {', '.join(check_failures)}",
        )
    if result == "canceled" and user_canceled:
        return Step("canceled", tier, message="canceled: its batch was canceled (routeq cancel)")
    if result == "errored" and error_type == "invalid_request_error":
        return Step("fail", tier, error_type="invalid_request", message=error_message or "invalid request")
    kind = "batch_expired" if result == "expired" else (error_type or "api_error")
    if errors >= max_attempts:
        msg = f"gave up after {errors} attempts; last: {kind}" + (
            f": {error_message}" if error_message else ""
        )
        return Step("fail", tier, error_type=kind, message=msg)
    return Step("again", tier, route_now)
