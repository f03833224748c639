"""What to do after a failed model call: classify the fault, then retry, escalate or fail.

routeq owns every retry (the SDK runs with ``max_retries=0``) so that cooldowns, backoff and escalation
are decided in one place. Everything here is pure: the caller passes the attempt counters and an RNG, and
gets back a decision it can log and test.

Counting convention: ``attempt`` is the 1-based number of the attempt that just failed, so after the first
failure ``attempt == 1``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import math
import random
import re
import time
from collections.abc import Sequence
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

# Tier-wide pause when the server names none, by fault kind (the one table of cooldown defaults).
COOLDOWN_DEFAULT_S: Final[dict[str, float]] = {"rate_limit": 5.0, "overloaded": 2.0}
COOLDOWN_MIN_S: Final = 0.5

# The API or the network is away (connection refused or reset, timeouts): the tier pauses fleet-wide for
# the n-th step of this schedule, n counting the outage's failed probes; a streak that sees no new fault
# for OUTAGE_STREAK_RESET_S starts again at the first step.
OUTAGE_COOLDOWNS_S: Final = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
OUTAGE_STREAK_RESET_S: Final = 120.0
OUTAGE_KINDS: Final = frozenset({"connection", "timeout"})
# A rejected API key (401) holds for every job and tier until an operator fixes it: the fleet pauses
# (every tier cools down) instead of dead-lettering each job, and no job spends attempts on it.
AUTH_KIND: Final = "auth"
WORLD_KINDS: Final = OUTAGE_KINDS | {AUTH_KIND}

_RESET_KINDS: Final = ("requests", "tokens", "input-tokens", "output-tokens")
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

    @property
    def outage(self) -> bool:
        """The API or the network is away, not something about this job: attempts are not spent on it."""
        return self.retryable and self.kind in OUTAGE_KINDS

    @property
    def world(self) -> bool:
        """An outage or a rejected API key: the job waits, and its attempt budget is untouched."""
        return self.outage or self.kind == AUTH_KIND

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


def _seconds(raw: Any) -> float | None:
    try:
        got = float(raw)
    except (TypeError, ValueError):
        return None
    return got if math.isfinite(got) else None


def _instant(raw: Any) -> float | None:
    """An RFC 3339 time (rate-limit resets) or an HTTP date, as Unix seconds; None if neither."""
    if raw is None:
        return None
    text = str(raw).strip()
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition; a bare time is ambiguous
        return None
    return when.timestamp()


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait as the server asked, or None when it said nothing usable.

    Precedence: ``retry-after-ms``, then ``retry-after`` (seconds or an HTTP date), then the latest
    ``anthropic-ratelimit-*-reset`` among the exhausted limits (``remaining`` 0; any reset if none says
    so). Absolute times are measured from the response's ``date`` header when present (the API's clock,
    not ours), else from ``now`` (Unix seconds, default the local clock). Garbage, NaN and infinities are
    ignored; a time in the past means 0; the result is capped at ``RETRY_AFTER_CAP_S``.
    """
    if headers is None:
        return None
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return _finite_nonneg(ms / 1000.0)
    ref = _instant(headers.get("date"))
    if ref is None:
        ref = time.time() if now is None else now
    raw = headers.get("retry-after")
    if raw is not None:
        secs = _seconds(raw)
        if secs is not None:
            return _finite_nonneg(secs)
        when = _instant(raw)
        return None if when is None else _finite_nonneg(when - ref)
    resets: list[float] = []
    exhausted: list[float] = []
    for kind in _RESET_KINDS:
        when = _instant(headers.get(f"anthropic-ratelimit-{kind}-reset"))
        if when is None:
            continue
        resets.append(when - ref)
        if _seconds(headers.get(f"anthropic-ratelimit-{kind}-remaining")) == 0:
            exhausted.append(when - ref)
    pick = exhausted or resets
    return _finite_nonneg(max(pick)) if pick else None


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


# --- cooldowns -----------------------------------------------------------------------------------


def cooldown_s(fault: Fault) -> float:
    """How long a 429/529 pauses its tier fleet-wide: the server's word, else the kind's default."""
    if fault.retry_after_s is not None:
        return min(max(fault.retry_after_s, COOLDOWN_MIN_S), RETRY_AFTER_CAP_S)
    return COOLDOWN_DEFAULT_S.get(fault.kind, COOLDOWN_DEFAULT_S["rate_limit"])


def spends_attempt(kind: str | None) -> bool:
    """Whether a failed attempt of this fault kind counts toward the job's ``max_attempts``."""
    return kind not in WORLD_KINDS


def outage_started_at(history: Sequence[tuple[str | None, float]]) -> float | None:
    """When the job's current outage began: the start of its trailing run of outage faults, or None.

    ``history`` is the job's failed and paid attempts in order, as (fault kind or None, started at).
    """
    since: float | None = None
    for kind, started in history:
        since = (started if since is None else since) if kind in WORLD_KINDS else None
    return since


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
class Backoff:
    """Try the same tier again after ``delay_s``."""

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


Action = Backoff | Escalate | Fail


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
    outage_s: float = 0.0,
    outage_patience_s: float = 600.0,
) -> Action:
    """Decide after a failed attempt.

    ``attempt`` counts the job's own faults (``spends_attempt``). An outage fault (connection, timeout)
    spends none: the job waits for the tier's outage cooldown (which paces every job of the tier) and
    tries again, until the outage has lasted ``outage_patience_s`` (``outage_s`` so far), then fails.

    Order: a non-retryable fault fails at once with the API's message; an escalatable fault that is the
    ``overload_escalate_after``-th in a row (``consecutive_overloads`` includes this one) escalates
    when allowed and a higher tier exists, even if attempts are used up; otherwise retry with backoff
    until ``max_attempts`` attempts have been made, then fail.
    """
    if fault.world:
        if outage_s >= outage_patience_s:
            return Fail(f"API unreachable for {outage_s:.0f}s: {fault.describe()}", fault)
        return Backoff(0.0, fault)
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
    return Backoff(backoff_s(attempt, fault, base_s, max_s, rng or random.Random()), fault)
