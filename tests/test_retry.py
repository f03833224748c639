"""Fault policy against exceptions raised by the real SDK (sync client over httpx2.MockTransport)."""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import pytest

from worker.policy.faults import (
    RETRY_AFTER_CAP_S,
    Action,
    Backoff,
    Escalate,
    Fail,
    Fault,
    backoff_s,
    classify,
    next_action,
    parse_retry_after,
)
from worker.sandbox.mock_api.errors import ERROR_TYPES  # the stand-in speaks the API's error types

API_KEY = "sk-ant-api03-TOPSECRETKEY"


def error_body(status: int, message: str, error_code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": ERROR_TYPES.get(status, "api_error"), "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error, "request_id": "req_011"}


def sdk_raise(handler: Callable[[httpx2.Request], httpx2.Response]) -> BaseException:
    """Make one messages.create call through the SDK and return what it raised."""
    client = anthropic.Anthropic(
        api_key=API_KEY,
        base_url="http://127.0.0.1:9",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    try:
        client.messages.create(
            model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    except Exception as exc:
        return exc
    finally:
        client.close()
    raise AssertionError("the call did not fail")


def status_error(
    status: int, message: str = "boom", headers: dict[str, str] | None = None, error_code: str | None = None
) -> BaseException:
    body = error_body(status, message, error_code)
    return sdk_raise(lambda _req: httpx2.Response(status, headers=headers or {}, json=body))


def raising(exc_type: type[Exception], text: str) -> Callable[[httpx2.Request], httpx2.Response]:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise exc_type(text, request=request)  # type: ignore[call-arg]

    return handler


# --- classify -------------------------------------------------------------------------------------


def test_429_with_retry_after_is_retryable_rate_limit_with_cooldown() -> None:
    exc = status_error(429, "Number of request tokens has exceeded your rate limit", {"retry-after": "7"})
    assert isinstance(exc, anthropic.RateLimitError)
    f = classify(exc)
    assert (f.kind, f.retryable, f.cooldown_tier, f.escalatable) == ("rate_limit", True, True, False)
    assert f.retry_after_s == 7.0
    assert f.status == 429
    assert f.message == "Number of request tokens has exceeded your rate limit"


def test_429_without_retry_after_is_still_retryable() -> None:
    f = classify(status_error(429, "slow down"))
    assert f.kind == "rate_limit" and f.retryable and f.cooldown_tier
    assert f.retry_after_s is None


def test_retry_after_ms_wins_over_retry_after() -> None:
    f = classify(status_error(429, headers={"retry-after-ms": "1500", "retry-after": "9"}))
    assert f.retry_after_s == 1.5


def test_spend_limit_429_is_final() -> None:
    exc = status_error(429, "You have reached your spend limit", error_code="enforced_spend_limit_reached")
    assert isinstance(exc, anthropic.RateLimitError)
    f = classify(exc)
    assert (f.kind, f.retryable, f.cooldown_tier, f.escalatable) == ("spend_limit", False, False, False)
    assert f.error_code == "enforced_spend_limit_reached"
    action = decide_after(f)
    assert isinstance(action, Fail)
    assert "spend limit" in action.cause


def test_other_429_error_codes_stay_retryable() -> None:
    f = classify(status_error(429, "ramp", {"retry-after": "2"}, error_code="ramp_limit_exceeded"))
    assert f.kind == "rate_limit" and f.retryable and f.retry_after_s == 2.0


def test_529_is_overloaded_cooldown_and_escalatable() -> None:
    exc = status_error(529, "Overloaded")
    assert isinstance(exc, anthropic.OverloadedError)
    assert isinstance(exc, anthropic.InternalServerError)  # must not fall into the generic 5xx branch
    f = classify(exc)
    assert (f.kind, f.retryable, f.cooldown_tier, f.escalatable) == ("overloaded", True, True, True)
    assert f.message == "Overloaded"


@pytest.mark.parametrize(
    ("status", "kind"), [(500, "server"), (502, "server"), (503, "server"), (504, "timeout")]
)
def test_5xx_retryable_without_cooldown(status: int, kind: str) -> None:
    exc = status_error(status, "Internal server error")
    assert isinstance(exc, anthropic.InternalServerError)
    f = classify(exc)
    assert (f.kind, f.retryable, f.cooldown_tier, f.escalatable, f.status) == (
        kind,
        True,
        False,
        False,
        status,
    )


@pytest.mark.parametrize(
    ("status", "exc_type", "kind"),
    [
        (400, anthropic.BadRequestError, "bad_request"),
        (403, anthropic.PermissionDeniedError, "permission"),
        (404, anthropic.NotFoundError, "not_found"),
        (413, anthropic.RequestTooLargeError, "too_large"),
        (422, anthropic.UnprocessableEntityError, "bad_request"),
    ],
)
def test_client_errors_are_final(status: int, exc_type: type[BaseException], kind: str) -> None:
    exc = status_error(status, f"problem {status}")
    assert isinstance(exc, exc_type)
    f = classify(exc)
    assert (f.kind, f.retryable, f.cooldown_tier) == (kind, False, False)
    action = decide_after(f, overload_escalate_after=1)
    assert isinstance(action, Fail)
    assert action.cause == f"{kind} ({status}): problem {status}"


def test_unknown_4xx_is_final_and_unknown_5xx_retryable() -> None:
    assert classify(status_error(418)).kind == "unknown"
    assert not classify(status_error(418)).retryable
    f = classify(status_error(599))
    assert f.kind == "server" and f.retryable


def test_x_should_retry_header_overrides() -> None:
    f = classify(status_error(500, headers={"x-should-retry": "false"}))
    assert not f.retryable
    f = classify(status_error(529, headers={"x-should-retry": "false"}))
    assert not f.retryable and not f.cooldown_tier and not f.escalatable
    f = classify(status_error(400, headers={"x-should-retry": "true"}))
    assert f.retryable


def test_timeout_is_retryable() -> None:
    exc = sdk_raise(raising(httpx2.ReadTimeout, "read timed out"))
    assert isinstance(exc, anthropic.APITimeoutError)
    f = classify(exc)
    assert (f.kind, f.retryable, f.cooldown_tier, f.status) == ("timeout", True, False, None)
    assert "ReadTimeout" in f.message


@pytest.mark.parametrize("exc_type", [httpx2.RemoteProtocolError, httpx2.ConnectError, httpx2.ReadError])
def test_connection_reset_is_retryable(exc_type: type[Exception]) -> None:
    exc = sdk_raise(raising(exc_type, "Server disconnected without sending a response."))
    assert isinstance(exc, anthropic.APIConnectionError)
    assert not isinstance(exc, anthropic.APITimeoutError)
    f = classify(exc)
    assert (f.kind, f.retryable) == ("connection", True)
    assert "Server disconnected" in f.message


def test_non_sdk_exceptions() -> None:
    assert classify(TimeoutError()).kind == "timeout"
    assert classify(ConnectionResetError("reset by peer")).kind == "connection"
    bug = classify(KeyError("x"))
    assert bug.kind == "unknown" and not bug.retryable


def test_message_is_the_api_message_never_headers_or_key() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(401, json=error_body(401, f"invalid x-api-key {API_KEY}"))

    f = classify(sdk_raise(handler))
    assert API_KEY in seen[0].headers.get("authorization", "") + seen[0].headers.get("x-api-key", "")
    assert API_KEY not in f.message and API_KEY not in f.describe()
    assert f.message == "invalid x-api-key [redacted]"
    for exc in (status_error(529), sdk_raise(raising(httpx2.ReadTimeout, "t"))):
        assert API_KEY not in classify(exc).describe()


def test_non_json_error_body_is_used_verbatim_and_bounded() -> None:
    exc = sdk_raise(lambda _r: httpx2.Response(502, text="<html>Bad gateway</html>\n" + "x" * 2000))
    f = classify(exc)
    assert f.kind == "server" and f.message.startswith("<html>Bad gateway</html>")
    assert len(f.message) <= 500


# --- retry-after parsing --------------------------------------------------------------------------


def test_parse_retry_after_variants() -> None:
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 12, usegmt=True)
    past = email.utils.formatdate(now - 50, usegmt=True)
    cases: list[tuple[dict[str, str], float | None]] = [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": " 4 "}, 4.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": "99999"}, RETRY_AFTER_CAP_S),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "6"}, 6.0),
        ({"retry-after": date}, 12.0),
        ({"retry-after": past}, 0.0),
    ]
    for headers, want in cases:
        got = parse_retry_after(httpx2.Headers(headers), now=now)
        assert got == pytest.approx(want) if want is not None else got is None, headers


def test_classify_caps_huge_retry_after() -> None:
    f = classify(status_error(429, headers={"retry-after": "86400"}))
    assert f.retry_after_s == RETRY_AFTER_CAP_S


# --- backoff --------------------------------------------------------------------------------------

PLAIN = Fault("server", True)


def test_backoff_full_jitter_bounds_and_growth() -> None:
    rng = random.Random(7)
    for attempt, window in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 30.0), (10_000, 30.0)]:
        samples = [backoff_s(attempt, PLAIN, 0.5, 30.0, rng) for _ in range(400)]
        assert all(0.0 <= s <= window for s in samples), attempt
        # Full jitter spreads over the whole window, not a narrow band at its top.
        assert min(samples) < 0.1 * window and max(samples) > 0.9 * window, attempt


def test_backoff_draws_from_the_rng_it_is_given() -> None:
    # The caller's RNG decides: attempt 3 draws uniformly from [0, base * 2**2].
    assert backoff_s(3, PLAIN, 0.5, 30.0, random.Random(1)) == random.Random(1).uniform(0.0, 2.0)


def test_retry_after_is_a_floor() -> None:
    rng = random.Random(3)
    f = Fault("rate_limit", True, cooldown_tier=True, retry_after_s=5.0)
    samples = [backoff_s(1, f, 0.5, 30.0, rng) for _ in range(200)]
    assert all(s == 5.0 for s in samples)  # window 0.5 < 5: always exactly the floor
    samples = [backoff_s(6, f, 0.5, 30.0, rng) for _ in range(400)]  # window 16
    assert all(5.0 <= s <= 16.0 for s in samples)
    assert max(samples) > 10.0


def test_retry_after_above_max_is_honoured_up_to_hard_cap() -> None:
    rng = random.Random(0)
    assert backoff_s(1, Fault("rate_limit", True, retry_after_s=120.0), 0.5, 30.0, rng) == 120.0
    huge = Fault("rate_limit", True, retry_after_s=10_000.0)  # built by hand, bypassing classify's cap
    assert backoff_s(1, huge, 0.5, 30.0, rng) == RETRY_AFTER_CAP_S


def test_zero_base_means_no_wait() -> None:
    assert backoff_s(5, PLAIN, 0.0, 30.0, random.Random(0)) == 0.0


# --- decisions ------------------------------------------------------------------------------------


def decide_after(fault: Fault, **counters: Any) -> Action:
    """``next_action`` with everyday counters (first attempt, 6 allowed, escalation on after 3)."""
    base: dict[str, Any] = dict(
        attempt=1,
        max_attempts=6,
        consecutive_overloads=0,
        escalate_on_overload=True,
        overload_escalate_after=3,
        can_escalate=True,
    )
    return next_action(fault, **{**base, **counters})


OVERLOAD = Fault("overloaded", True, cooldown_tier=True, status=529, message="Overloaded", escalatable=True)


def test_retry_until_exhausted() -> None:
    rng = random.Random(0)
    for attempt in range(1, 6):
        action = decide_after(PLAIN, attempt=attempt, rng=rng)
        assert isinstance(action, Backoff)
        assert 0.0 <= action.delay_s <= 30.0
    last = decide_after(Fault("server", True, status=500, message="Internal"), attempt=6, rng=rng)
    assert isinstance(last, Fail)
    assert last.cause == "exhausted 6 attempts: server (500): Internal"


def test_escalates_only_after_n_consecutive_overloads() -> None:
    kinds = [decide_after(OVERLOAD, attempt=n, consecutive_overloads=n).kind for n in range(1, 4)]
    assert kinds == ["retry", "retry", "escalate"]


def test_no_escalation_when_not_allowed() -> None:
    three = dict(attempt=3, consecutive_overloads=3)
    assert isinstance(decide_after(OVERLOAD, **three, escalate_on_overload=False), Backoff)  # by settings
    assert isinstance(decide_after(OVERLOAD, **three, can_escalate=False), Backoff)  # already the top tier
    assert isinstance(decide_after(OVERLOAD, attempt=3, consecutive_overloads=2), Backoff)  # not 3 in a row
    rate_limited = Fault("rate_limit", True, cooldown_tier=True, status=429)
    many = dict(attempt=3, consecutive_overloads=9, overload_escalate_after=1)
    assert isinstance(decide_after(rate_limited, **many), Backoff)  # 429 is not escalatable


def test_overload_at_attempt_limit_escalates_rather_than_fails() -> None:
    assert isinstance(decide_after(OVERLOAD, attempt=6, consecutive_overloads=3), Escalate)
    final = decide_after(OVERLOAD, attempt=6, consecutive_overloads=3, can_escalate=False)
    assert isinstance(final, Fail) and final.cause.startswith("exhausted 6 attempts: overloaded (529)")


def test_spend_limit_code_read_from_body_when_sdk_does_not_parse_it() -> None:
    exc = status_error(429, "spend", error_code="contract_spend_limit_reached")
    assert isinstance(exc, anthropic.APIStatusError)
    exc.error_code = None  # as an SDK older than the error_code attribute would leave it
    f = classify(exc)
    assert (f.kind, f.retryable, f.error_code) == ("spend_limit", False, "contract_spend_limit_reached")
