"""When a job must be answered: ``constraints.mode`` and ``constraints.deadline`` (pure functions).

A deadline is an ISO 8601 timestamp with a time zone (``2026-12-02T18:00:00Z``) or a duration from
enqueue (``90s``, ``45m``, ``6h``, ``2d``, also combined: ``1h30m``). The producer pins a duration to an
absolute timestamp when it accepts the job; the deadline is scheduling, not content, so it does not
enter the job's id.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from typing import Any, Literal, TypeVar

Mode = Literal["realtime", "batch", "auto"]
MODES: tuple[Mode, ...] = ("realtime", "batch", "auto")
_DURATION = re.compile(
    r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$"
)
_T = TypeVar("_T")


def parse_duration(text: str) -> dt.timedelta | None:
    """``6h`` -> 6 hours; None when ``text`` is not a duration."""
    m = _DURATION.match(text.strip())
    if m is None or not any(m.groups()):
        return None
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return dt.timedelta(days=d, hours=h, minutes=mi, seconds=s)


def parse_timestamp(text: str) -> dt.datetime | None:
    """An ISO 8601 timestamp with a time zone, else None (a zone-less time is ambiguous across hosts)."""
    try:
        at = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def check_deadline(text: str) -> str:
    """``text`` unchanged when it is a valid deadline; else ValueError saying what is accepted."""
    if parse_duration(text) is not None or parse_timestamp(text) is not None:
        return text
    raise ValueError(
        f"deadline {text!r} is neither an ISO timestamp with a time zone (2026-12-02T18:00:00Z) "
        "nor a duration like 90s, 45m, 6h, 2d or 1h30m"
    )


def deadline_epoch(text: str, enqueued_at: float) -> float:
    """Seconds since the epoch at which the answer is due; a duration counts from ``enqueued_at``."""
    span = parse_duration(text)
    if span is not None:
        return enqueued_at + span.total_seconds()
    at = parse_timestamp(text)
    if at is None:
        raise ValueError(check_deadline(text))
    return at.timestamp()


def pin_deadline(text: str | None, now: float) -> str | None:
    """A duration made absolute at ``now`` (ISO, UTC); timestamps and None pass through."""
    if text is None or parse_duration(text) is None:
        return text
    return dt.datetime.fromtimestamp(deadline_epoch(text, now), dt.UTC).isoformat().replace("+00:00", "Z")


def with_schedule(items: Iterable[_T], mode: Mode | None, deadline: str | None) -> Iterator[_T]:
    """Give jobs that name no mode / deadline of their own these ones (other items pass through)."""
    from jobs.contract import Job
    from jobs.producer import Located

    for item in items:
        if isinstance(item, Located):
            (scheduled,) = with_schedule([item.job], mode, deadline)
            yield Located(item.where, scheduled)  # type: ignore[misc]
            continue
        if isinstance(item, Job) and (mode or deadline):
            c = item.constraints
            update: dict[str, Any] = {}
            if mode and c.mode is None:
                update["mode"] = mode
            if deadline and c.deadline is None:
                update["deadline"] = deadline
            if update:
                yield item.model_copy(update={"constraints": c.model_copy(update=update)})
                continue
        yield item
