"""The side task every worker process runs: submit due gathering sets, poll and ingest, recover intents."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from redis.exceptions import RedisError

from jobs.connections import aw
from jobs.tiers import TIER_ORDER
from worker.batches.poll import poll_open
from worker.batches.submit import maybe_submit
from worker.runtime import Runtime

log = logging.getLogger("routeq.batches")


def tick_s(rt: Runtime) -> float:
    s = rt.settings
    return max(0.05, min(1.0, s.batch_poll_s, s.batch_window_s / 2 if s.batch_window_s else 1.0))


async def run_forever(rt: Runtime, owner: str, stopping: asyncio.Event) -> None:
    models = sorted({rt.settings.model_for(t) for t in TIER_ORDER})
    poll_ms = max(1, int(rt.settings.batch_poll_s * 1000))
    while not stopping.is_set():
        for model in models:
            # One model's failure must not stop the others' submissions, nor the polling below.
            await _guarded(maybe_submit(rt, model, owner), f"submitting for {model}")
        await _guarded(_poll_on_turn(rt, owner, poll_ms), "polling")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), tick_s(rt))


async def _poll_on_turn(rt: Runtime, owner: str, poll_ms: int) -> None:
    # One pass per interval across the fleet: N processes polling on their own would spend N times the
    # batch RPM on the same answers.
    if await rt.redis.set(rt.keys.api_batches_poll_turn, owner, nx=True, px=poll_ms):
        await poll_open(rt, owner)


async def _guarded(step: Awaitable[object], what: str) -> None:
    try:
        await step
    except (RedisError, OSError) as e:
        log.warning("message batches: %s: %s; carrying on", what, e)
    except Exception:
        log.exception("message batches: %s: unexpected error; carrying on", what)


async def idle(rt: Runtime) -> bool:
    """No request gathered or in an open submission (for ``--burst``)."""
    k = rt.keys
    return not await aw(rt.redis.hlen(k.batch_items)) and not await rt.redis.zcard(k.api_batches_open)
