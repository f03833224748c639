"""Local handover: a freed slot goes straight to a waiter of the same process, without Redis first.

Through the line, a freed slot reaches its next caller in two hops between processes (the release
script to Redis, the grant's pubsub message to the waiter's process), each ~1 ms at the median on a busy
2-core machine and 5-15 ms in its tail, while the paid-for slot sits idle. When the releasing process has
a waiter of its own that the line would serve about as soon, it hands the slot over itself: the lease
stays held (renewed for the new holder), the waiter's call starts at once, and the script that follows
(``lease_handover.lua``) only takes the waiter's place out of the line and settles the finished call.

Why the fleet's limits still hold:

* The number of leases does not change, so the concurrency limit holds exactly.
* A handover is made only while the tier's last word from Redis (every limits script's reply carries
  it) said: no rpm/itpm/otpm limit (those need a bucket asked first), no cooldown, and no more holders
  than the limit (a lowered limit shrinks the count only through releases). A limit change or a cooldown
  is published, and stops handovers at once.
* First come first served holds to within ``slack_ms``. The line's first waiter only ever gets younger
  (whoever joins later joined later), so the first waiter's join time seen in any reply is a lower bound
  of the present one's. A waiter that joined no later than that + ``slack_ms`` never passes one that joined
  more than ``slack_ms`` before it; each waiter is passed by a bounded number of others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

W = TypeVar("W")


@dataclass
class LineView:
    """What this process last heard of one tier's line."""

    first_joined_ms: int | None = None  # the latest join time of the line's first waiter seen
    open: bool = False
    closed_at: float = float("-inf")  # monotonic time of the last event that closed it

    def heard(self, first_joined_ms: int, open_: int, asked_at: float) -> None:
        """A script's reply (``line_view`` in limits_lib.lua: open 1, closed 0, -1 no news, as from an
        empty line); ``asked_at`` is when it was sent (a reply to a request sent before a closing event
        cannot reopen)."""
        if open_ < 0:
            return
        if self.first_joined_ms is None or first_joined_ms > self.first_joined_ms:
            self.first_joined_ms = first_joined_ms
        if open_ == 0:
            self.open = False
        elif asked_at > self.closed_at:
            self.open = True

    def close(self, now: float) -> None:
        """A limit change or a cooldown: no handover until a reply to a later request says so."""
        self.open = False
        self.closed_at = now


def heir(view: LineView, waiters: Iterable[tuple[int, W]], slack_ms: float) -> W | None:
    """The waiter (of ``(joined ms, waiter)``) to hand a freed slot to, or None for the line: the earliest
    joined, if handovers are open and it joined within ``slack_ms`` of the line's first waiter."""
    if not view.open or view.first_joined_ms is None:
        return None
    best: tuple[int, W] | None = None
    for joined, w in waiters:
        if best is None or joined < best[0]:
            best = (joined, w)
    if best is None or best[0] > view.first_joined_ms + slack_ms:
        return None
    return best[1]
