"""The fleet-wide RPM of the Message Batches endpoints: one token bucket in Redis for every process.

The API limits calls to its batch endpoints apart from Messages calls, shared across models, so every
create, retrieve, results, list and cancel routeq makes takes from one bucket first (``results()`` is
two calls: the SDK retrieves the batch before fetching its ``results_url``). A background pass that
finds the bucket empty skips that call until a later tick; nothing is lost, since gathered requests,
open submissions and intents all wait in Redis. ``routeq cancel`` waits for room instead.
"""

from __future__ import annotations

import asyncio
import time

from worker.fleet.redis_scripts import Scripts
from worker.runtime import Runtime

RESULTS_CALLS = 2  # retrieve, then GET results_url


class BatchRateLimited(Exception):
    """No room in the batch endpoints' RPM within the time allowed."""


async def take(rt: Runtime, calls: int = 1) -> float:
    """0.0 when ``calls`` were taken, else the seconds until they fit (nothing taken then)."""
    rpm = rt.settings.batch_rpm
    if rpm is None:
        return 0.0
    script = Scripts(rt.redis, lib="limits_lib")["batch_rpm"]
    wait_ms = await script(keys=[rt.keys.batch_rpm_bucket], args=[rpm, calls])
    return int(wait_ms) / 1000


async def wait(rt: Runtime, calls: int = 1, timeout_s: float = 120.0) -> None:
    """Take ``calls``, sleeping until they fit; :class:`BatchRateLimited` past ``timeout_s``."""
    give_up = time.monotonic() + timeout_s
    while (delay := await take(rt, calls)) > 0:
        if time.monotonic() + delay > give_up:
            raise BatchRateLimited(f"the Message Batches RPM leaves no room for {delay:.0f}s")
        await asyncio.sleep(delay)
