"""The side task every worker process runs: submit due gathering sets, poll and ingest, recover intents."""

from __future__ import annotations

import asyncio
import contextlib
import logging

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
        try:
            for model in models:
                await maybe_submit(rt, model, owner)
            # One pass per interval across the fleet: N processes polling on their own would spend N
            # times the batch RPM on the same answers.
            if await rt.redis.set(rt.keys.api_batches_poll_turn, owner, nx=True, px=poll_ms):
                await poll_open(rt, owner)
        except (RedisError, OSError) as e:
            log.warning("message batches: %s; carrying on", e)
        except Exception:
            log.exception("message batches: unexpected error; carrying on")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), tick_s(rt))


async def idle(rt: Runtime) -> bool:
    """No request gathered or in an open submission (for ``--burst``)."""
    k = rt.keys
    return not await aw(rt.redis.hlen(k.batch_items)) and not await rt.redis.zcard(k.api_batches_open)
