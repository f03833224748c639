"""Whether one request goes into a Message Batch or to the realtime API (pure)."""

from __future__ import annotations

from typing import Literal

from jobs.schedule import Mode

Route = Literal["realtime", "batch"]


def choose_route(
    mode: Mode,
    deadline_at: float | None,
    now: float,
    *,
    expected_latency_s: float,
    margin_s: float,
) -> Route:
    """``batch`` when the mode allows it and the deadline (if any) leaves room for a batch to end.

    ``realtime`` is always realtime. ``batch`` and ``auto`` both fall back to realtime once
    ``now + expected_latency_s + margin_s`` passes the deadline: half price is not worth a late answer.
    Without a deadline nothing is waiting on the answer, so both batch.
    """
    if mode == "realtime":
        return "realtime"
    if deadline_at is None:
        return "batch"
    return "batch" if now + expected_latency_s + margin_s <= deadline_at else "realtime"
