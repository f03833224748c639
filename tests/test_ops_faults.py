"""The fault policy's one retry-after/cooldown parser, and outages that spend no attempts."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import httpx2
import pytest

from worker.policy.faults import (
    COOLDOWN_DEFAULT_S,
    COOLDOWN_MIN_S,
    OUTAGE_KINDS,
    RETRY_AFTER_CAP_S,
    Backoff,
    Fail,
    Fault,
    cooldown_s,
    next_action,
    outage_started_at,
    parse_retry_after,
    spends_attempt,
)

NOW = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def iso(seconds: float) -> str:
    return (NOW + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "Wed, 01 Jan 2025 12:00:10 GMT"}, 10.0),
        (
            {
                "anthropic-ratelimit-requests-remaining": "5",
                "anthropic-ratelimit-requests-reset": iso(30),
                "anthropic-ratelimit-input-tokens-remaining": "0",
                "anthropic-ratelimit-input-tokens-reset": iso(12),
            },
            12.0,  # the exhausted limit decides
        ),
        ({"anthropic-ratelimit-tokens-reset": iso(4)}, 4.0),  # none exhausted: the latest reset
        ({"anthropic-ratelimit-tokens-reset": "garbage"}, None),
        ({"retry-after": "soon"}, None),
    ],
)
def test_parse_retry_after_reads_every_form_the_api_sends(
    headers: dict[str, str], expected: float | None
) -> None:
    got = parse_retry_after(httpx2.Headers(headers), now=NOW.timestamp())
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_parse_retry_after_measures_from_the_servers_date() -> None:
    headers = httpx2.Headers(
        {"date": "Wed, 01 Jan 2025 12:00:00 GMT", "anthropic-ratelimit-tokens-reset": "2025-01-01T12:00:08Z"}
    )
    # our clock is an hour ahead; the response's own date is the reference
    assert parse_retry_after(headers, now=NOW.timestamp() + 3600) == pytest.approx(8.0)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault("rate_limit", True, cooldown_tier=True), COOLDOWN_DEFAULT_S["rate_limit"]),
        (Fault("overloaded", True, cooldown_tier=True), COOLDOWN_DEFAULT_S["overloaded"]),
        (Fault("rate_limit", True, cooldown_tier=True, retry_after_s=7.0), 7.0),
        (Fault("rate_limit", True, cooldown_tier=True, retry_after_s=0.0), COOLDOWN_MIN_S),
        (Fault("rate_limit", True, cooldown_tier=True, retry_after_s=1e9), RETRY_AFTER_CAP_S),
    ],
)
def test_cooldown_is_the_servers_word_else_the_default(fault: Fault, expected: float) -> None:
    assert cooldown_s(fault) == expected


def decide(fault: Fault, *, attempt: int, outage_s: float = 0.0) -> object:
    return next_action(
        fault,
        attempt=attempt,
        max_attempts=2,
        consecutive_overloads=0,
        escalate_on_overload=True,
        overload_escalate_after=3,
        can_escalate=True,
        base_s=0.1,
        max_s=1.0,
        rng=random.Random(3),
        outage_s=outage_s,
        outage_patience_s=60.0,
    )


@pytest.mark.parametrize("kind", sorted(OUTAGE_KINDS))
def test_an_outage_spends_no_attempt_until_its_patience_ends(kind: str) -> None:
    fault = Fault(kind, True)  # type: ignore[arg-type]
    assert fault.outage and not spends_attempt(kind)
    # far past max_attempts, but the world (not the job) is at fault: wait for the tier's cooldown
    assert isinstance(decide(fault, attempt=50, outage_s=59.0), Backoff)
    got = decide(fault, attempt=0, outage_s=61.0)
    assert isinstance(got, Fail) and got.message.startswith("API unreachable for 61s")


def test_a_fault_of_the_job_still_spends_its_attempts() -> None:
    server = Fault("server", True)
    assert spends_attempt("server") and not server.outage
    assert isinstance(decide(server, attempt=1), Backoff)
    assert isinstance(decide(server, attempt=2), Fail)


def test_outage_start_is_the_first_of_the_trailing_outage_faults() -> None:
    assert outage_started_at([]) is None
    assert outage_started_at([("server", 1.0)]) is None
    assert outage_started_at([("connection", 1.0), ("server", 2.0)]) is None
    assert (
        outage_started_at([("connection", 1.0), ("server", 2.0), ("timeout", 3.0), ("connection", 4.0)])
        == 3.0
    )
    assert outage_started_at([("connection", 1.0), (None, 2.0), ("connection", 5.0)]) == 5.0


@pytest.mark.integration
async def test_outage_cooldown_grows_once_per_probe_not_per_call_in_flight(redis_url: str) -> None:
    from redis.asyncio import Redis

    from jobs.settings import Settings
    from jobs.tiers import Tier
    from worker.fleet.tier_gate import TierGate

    settings = Settings(_env_file=None, key_prefix="t")  # type: ignore[call-arg]
    r = Redis.from_url(redis_url)
    gate = TierGate(r, settings.keys, settings, owner="w0")
    schedule = (0.2, 0.4, 5.0)
    try:
        # eight calls in flight when the API went away: one step, not eight
        got = [await gate.outage(Tier.haiku, "connection", schedule, 60.0) for _ in range(8)]
        assert got[0] == (pytest.approx(0.2), 1)
        assert all(streak == 1 for _, streak in got)
        await asyncio.sleep(0.25)  # the cooldown ended; the next probe fails too: the next step
        left, streak = await gate.outage(Tier.haiku, "connection", schedule, 60.0)
        assert (left, streak) == (pytest.approx(0.4), 2)
        await asyncio.sleep(0.45)
        await gate.outage(Tier.haiku, "timeout", schedule, 60.0)
        await r.delete(settings.keys.cooldown(Tier.haiku))
        assert (await gate.outage(Tier.haiku, "timeout", schedule, 60.0))[1] == 4  # the schedule's last step
        assert await gate.cooldown_remaining(Tier.haiku) == pytest.approx(5.0, abs=0.1)
        assert await gate.cooldown_remaining(Tier.sonnet) == 0
    finally:
        await r.aclose()


def test_a_rejected_key_pauses_instead_of_failing_the_job() -> None:
    auth = Fault("auth", False, status=401)
    assert auth.world and not spends_attempt("auth")
    assert isinstance(decide(auth, attempt=50, outage_s=30.0), Backoff)
    got = decide(auth, attempt=0, outage_s=61.0)
    assert isinstance(got, Fail) and "auth (401)" in got.message
    assert outage_started_at([("connection", 1.0), ("auth", 2.0)]) == 1.0
