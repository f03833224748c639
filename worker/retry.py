"""What to do after a failed model call: classify the fault, then retry, escalate or fail.

routeq owns every retry (the SDK runs with ``max_retries=0``) so that cooldowns, backoff and escalation
are decided in one place. Everything here is pure: the caller passes the attempt counters and an RNG, and
gets back a decision it can log and test.

Counting convention: ``attempt`` is the 1-based number of the attempt that just failed, so after the first
failure ``attempt == 1``.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import anthropic

if TYPE_CHECKING:
    pass

FaultKind = Literal[
    "rate_limit",
    "overloaded",
    "server",
    "timeout",
    "connection",
    "conflict",
    "spend_limit",
    "bad_request",
    "auth",
    "permission",
    "not_found",
    "too_large",
    "bad_response",
    "unknown",
]

# The SDK honours retry-after with no upper bound; a misbehaving proxy could park a job for days.
RETRY_AFTER_CAP_S: Final = 300.0

# 429 error codes that mean "your organisation may not spend more": waiting a few seconds will not help.
SPEND_LIMIT_CODES: Final = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
    }
)

_MAX_MESSAGE_CHARS: Final = 500
# Defence in depth: an error text must never carry a credential into logs, traces or stored results.
_SECRET_RE: Final = re.compile(r"(sk-ant-[A-Za-z0-9_\-]+|Bearer\s+\S+)")


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    retryable: bool
    # 429/529: the whole tier (fleet-wide) should pause, not only this job.
    cooldown_tier: bool = False
    retry_after_s: float | None = None
    status: int | None = None
    message: str = ""
    # An overload-type fault: after enough of them in a row the job may move to the next tier.
    escalatable: bool = False
    error_code: str | None = None

    def describe(self) -> str:
        where = f"{self.kind} ({self.status})" if self.status is not None else self.kind
        return f"{where}: {self.message}" if self.message else where


# --- classification -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StatusRule:
    kind: FaultKind
    retryable: bool
    cooldown_tier: bool = False
    escalatable: bool = False


_STATUS_RULES: Final[dict[int, _StatusRule]] = {
    400: _StatusRule("bad_request", False),
    401: _StatusRule("auth", False),
    402: _StatusRule("spend_limit", False),  # billing: the linked organisation cannot pay
    403: _StatusRule("permission", False),
    404: _StatusRule("not_found", False),
    408: _StatusRule("timeout", True),
    409: _StatusRule("conflict", True),
    413: _StatusRule("too_large", False),
    422: _StatusRule("bad_request", False),
    429: _StatusRule("rate_limit", True, cooldown_tier=True),
    499: _StatusRule("connection", True),
    500: _StatusRule("server", True),
    501: _StatusRule("server", False),  # the endpoint does not exist here; retrying cannot help
    502: _StatusRule("server", True),
    503: _StatusRule("server", True),
    504: _StatusRule("timeout", True),
    529: _StatusRule("overloaded", True, cooldown_tier=True, escalatable=True),
}


def _rule_for(status: int) -> _StatusRule:
    rule = _STATUS_RULES.get(status)
    if rule is not None:
        return rule
    if status >= 500:
        return _StatusRule("server", True)
    return _StatusRule("unknown", False)


def clean_message(text: str) -> str:
    """One line, bounded, with anything that looks like a credential masked."""
    text = _SECRET_RE.sub("[redacted]", " ".join(text.split()))
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _finite_nonneg(value: float) -> float | None:
    if math.isnan(value) or math.isinf(value):
        return None
    return min(max(value, 0.0), RETRY_AFTER_CAP_S)


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait as the server asked: ``retry-after-ms``, else ``retry-after`` (seconds or HTTP date).

    Garbage, NaN and infinities are ignored; a date in the past means 0; the result is capped at
    ``RETRY_AFTER_CAP_S``. ``now`` (Unix seconds) is only used for the HTTP-date form.
    """
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            got = _finite_nonneg(float(ms) / 1000.0)
        except (TypeError, ValueError):
            got = None
        if got is not None:
            return got
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return _finite_nonneg(float(raw))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(raw))
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        return None
    current = time.time() if now is None else now
    return _finite_nonneg(when.timestamp() - current)


def _status_message(exc: anthropic.APIStatusError) -> str:
    # api_message is error.message from the body; the exception's own str() embeds the whole body dict.
    if isinstance(exc.api_message, str) and exc.api_message:
        return clean_message(exc.api_message)
    if isinstance(exc.body, str) and exc.body:
        return clean_message(exc.body)
    return f"HTTP {exc.status_code}"


def _error_code(exc: anthropic.APIStatusError) -> str | None:
    code = getattr(exc, "error_code", None)  # newer SDKs parse it; older ones leave only the body
    if code is None and isinstance(exc.body, dict):
        error = exc.body.get("error")
        details = error.get("details") if isinstance(error, dict) else None
        code = details.get("error_code") if isinstance(details, dict) else None
    return code if isinstance(code, str) else None


def _classify_status(exc: anthropic.APIStatusError, now: float | None) -> Fault:
    status = exc.status_code
    code = _error_code(exc)
    retry_after = parse_retry_after(exc.response.headers, now)
    message = _status_message(exc)
    if code in SPEND_LIMIT_CODES:
        # Not retryable and no tier cooldown: other tiers share the same organisation spend limit, and
        # the job must fail with a clear cause rather than spin.
        return Fault(
            "spend_limit", False, retry_after_s=retry_after, status=status, message=message, error_code=code
        )
    rule = _rule_for(status)
    retryable = rule.retryable
    should_retry = exc.response.headers.get("x-should-retry")
    # The server may say explicitly; the SDK obeys this header too.
    if should_retry == "true":
        retryable = True
    elif should_retry == "false":
        retryable = False
    return Fault(
        rule.kind,
        retryable,
        cooldown_tier=rule.cooldown_tier and retryable,
        retry_after_s=retry_after,
        status=status,
        message=message,
        escalatable=rule.escalatable and retryable,
        error_code=code,
    )


def _cause_text(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if cause is None:
        return ""
    detail = str(cause)
    return f" ({type(cause).__name__}: {detail})" if detail else f" ({type(cause).__name__})"


def classify(exc: BaseException, now: float | None = None) -> Fault:
    """Map an exception from a model call to a ``Fault``.

    Cancellation must be re-raised by the caller, not classified; if it gets here it is ``unknown`` and not
    retryable. Exceptions that are not the SDK's are ``unknown`` and not retryable (most likely a bug),
    except plain timeouts and OS-level connection errors, which are transient.
    """
    if isinstance(exc, anthropic.APIStatusError):
        return _classify_status(exc, now)
    if isinstance(exc, anthropic.APITimeoutError):
        return Fault("timeout", True, message=clean_message("request timed out" + _cause_text(exc)))
    if isinstance(exc, anthropic.APIConnectionError):
        return Fault("connection", True, message=clean_message(exc.message + _cause_text(exc)))
    if isinstance(exc, anthropic.APIResponseValidationError):
        return Fault("bad_response", True, status=exc.status_code, message=clean_message(exc.message))
    if isinstance(exc, asyncio.CancelledError):
        return Fault("unknown", False, message="cancelled")
    if isinstance(exc, TimeoutError):
        return Fault("timeout", True, message=clean_message(f"{type(exc).__name__}: {exc}".rstrip(": ")))
    if isinstance(exc, ConnectionError):
        return Fault("connection", True, message=clean_message(f"{type(exc).__name__}: {exc}"))
    return Fault("unknown", False, message=clean_message(f"{type(exc).__name__}: {exc}"))


# --- backoff --------------------------------------------------------------------------------------


def backoff_s(attempt: int, fault: Fault, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before the next attempt: full jitter, ``uniform(0, min(max_s, base_s * 2**(attempt-1)))``.

    A server-given ``retry_after_s`` is a floor: the delay is ``max(retry_after_s, jittered)``. If the
    server asks for more than ``max_s`` it is still honoured (retrying earlier only earns another 429),
    up to ``RETRY_AFTER_CAP_S``; so the result is at most ``max(max_s, min(retry_after_s, 300))``.
    De-synchronising workers that got the same retry-after is the tier cooldown's job, not this one's.
    """
    exponent = min(max(attempt, 1) - 1, 60)  # 2**60 * base already exceeds any sane max_s
    window = min(max_s, base_s * (2.0**exponent))
    delay = rng.uniform(0.0, window) if window > 0 else 0.0
    if fault.retry_after_s is not None:
        delay = max(delay, min(fault.retry_after_s, RETRY_AFTER_CAP_S))
    return delay


# --- decision -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retry:
    delay_s: float
    fault: Fault
    kind: Literal["retry"] = "retry"


@dataclass(frozen=True, slots=True)
class Escalate:
    fault: Fault
    kind: Literal["escalate"] = "escalate"


@dataclass(frozen=True, slots=True)
class Fail:
    cause: str
    fault: Fault
    kind: Literal["fail"] = "fail"

    @property
    def message(self) -> str:
        """The final error to record: the API's message, or "exhausted N attempts: ..."."""
        return self.cause


Action = Retry | Escalate | Fail


def next_action(
    fault: Fault,
    *,
    attempt: int,
    max_attempts: int,
    consecutive_overloads: int,
    escalate_on_overload: bool,
    overload_escalate_after: int,
    can_escalate: bool,
    base_s: float = 0.5,
    max_s: float = 30.0,
    rng: random.Random | None = None,
) -> Action:
    """Decide after a failed attempt.

    Order: a non-retryable fault fails at once with the API's message; an escalatable fault that is the
    ``overload_escalate_after``-th in a row (``consecutive_overloads`` includes this one) escalates
    when allowed and a higher tier exists, even if attempts are used up; otherwise retry with backoff
    until ``max_attempts`` attempts have been made, then fail.
    """
    if not fault.retryable:
        return Fail(fault.describe(), fault)
    if (
        fault.escalatable
        and escalate_on_overload
        and can_escalate
        and consecutive_overloads >= overload_escalate_after
    ):
        return Escalate(fault)
    if attempt >= max_attempts:
        return Fail(f"exhausted {attempt} attempts: {fault.describe()}", fault)
    return Retry(backoff_s(attempt, fault, base_s, max_s, rng or random.Random()), fault)
