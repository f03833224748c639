"""Per-model admission: a concurrency cap and a requests-per-minute token bucket, like the API's limits.

The bucket holds ``rpm`` requests and refills continuously at rpm/60 per second (the API's limits are
token buckets, not fixed windows). Rejections carry the headers the API sends with a 429.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from worker.sandbox.mock_api.config import Clock


def rfc3339_in(seconds: float) -> str:
    t = datetime.now(UTC) + timedelta(seconds=max(0.0, seconds))
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Rejection:
    message: str
    retry_after_s: int
    headers: dict[str, str]


class ModelLimiter:
    def __init__(self, max_concurrency: int | None, rpm: int | None, clock: Clock) -> None:
        self.max_concurrency = max_concurrency
        self.rpm = rpm
        self.active = 0
        self._clock = clock
        self._tokens = float(rpm or 0)
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        if self.rpm:
            self._tokens = min(float(self.rpm), self._tokens + (now - self._stamp) * self.rpm / 60.0)
        self._stamp = now
        return now

    def headers(self) -> dict[str, str]:
        """anthropic-ratelimit-requests-* for the current bucket; empty when no rpm is configured."""
        if not self.rpm:
            return {}
        full_in = (self.rpm - self._tokens) * 60.0 / self.rpm
        return {
            "anthropic-ratelimit-requests-limit": str(self.rpm),
            "anthropic-ratelimit-requests-remaining": str(int(self._tokens)),
            "anthropic-ratelimit-requests-reset": rfc3339_in(full_in),
        }

    def try_acquire(self) -> Rejection | None:
        if self.max_concurrency is not None and self.active >= self.max_concurrency:
            self._refill()
            return Rejection(
                f"Number of concurrent requests has exceeded your limit of {self.max_concurrency}.",
                1,
                self.headers(),
            )
        if self.rpm:
            self._refill()
            if self._tokens < 1.0:
                wait = (1.0 - self._tokens) * 60.0 / self.rpm
                return Rejection(
                    f"Number of request tokens has exceeded your per-minute rate limit ({self.rpm} rpm).",
                    max(1, math.ceil(wait)),
                    self.headers(),
                )
            self._tokens -= 1.0
        self.active += 1
        return None

    def release(self) -> None:
        self.active -= 1
