"""The local handover's decisions (worker/fleet/handover.py), without Redis."""

from __future__ import annotations

from worker.fleet.handover import LineView, heir


def test_the_earliest_waiter_within_the_slack_of_the_lines_first_is_the_heir() -> None:
    view = LineView()
    view.heard(1_000, 1, asked_at=1.0)
    assert heir(view, [(1_060, "b"), (1_040, "a"), (1_500, "c")], slack_ms=50) == "a"
    assert heir(view, [(1_060, "b")], slack_ms=50) is None  # joined 60 ms after the line's first
    assert heir(view, [], slack_ms=50) is None


def test_nothing_is_handed_over_before_redis_said_the_line_is_open() -> None:
    view = LineView()
    assert heir(view, [(0, "a")], slack_ms=1e9) is None  # never heard of
    view.heard(1_000, 0, asked_at=1.0)  # e.g. the tier has a rate limit
    assert heir(view, [(900, "a")], slack_ms=50) is None


def test_the_first_waiters_join_time_only_moves_forward() -> None:
    # Replies arrive out of order across connections; the line's first only ever gets younger, so the
    # latest join time seen is the best lower bound.
    view = LineView()
    view.heard(2_000, 1, asked_at=1.0)
    view.heard(1_500, 1, asked_at=2.0)
    assert view.first_joined_ms == 2_000
    view.heard(0, -1, asked_at=3.0)  # an empty line: no news
    assert view.first_joined_ms == 2_000 and view.open


def test_a_reply_to_a_request_sent_before_a_closing_event_does_not_reopen() -> None:
    view = LineView()
    view.heard(1_000, 1, asked_at=1.0)
    view.close(now=5.0)  # a cooldown or a limit change was published
    view.heard(1_000, 1, asked_at=4.0)  # sent before the event: it may not know of it
    assert not view.open
    view.heard(1_000, 1, asked_at=6.0)
    assert view.open
