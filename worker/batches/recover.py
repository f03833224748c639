"""An intent without a batch id: find the batch its ``create`` may have made before resubmitting.

There is no idempotency key on create, so the only evidence is the API's own list. Candidates are
batches created since the intent (less a clock-skew allowance) that routeq has not recorded, holding as
many requests as the intent. One still processing means "wait"; an ended one is compared by its
results' custom_ids. Only when every candidate is ruled out do the requests go back to gathering.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator

import orjson
from anthropic.types.messages import MessageBatch

from jobs.connections import aw
from worker.batches import rate
from worker.batches.submit import confirm, undo_intent
from worker.runtime import Runtime

log = logging.getLogger("routeq.batches")
SKEW_S = 120.0


async def _created_since(rt: Runtime, since: dt.datetime) -> AsyncIterator[MessageBatch | None]:
    """The API's batches created at or after ``since``, newest first, a page (one call) at a time;
    None when the batch RPM has no room for the next page."""
    if await rate.take(rt) > 0:
        yield None
        return
    page = await rt.client.messages.batches.list(limit=100)
    while True:
        for b in page.data:
            if b.created_at < since:
                return  # newest first: everything further is older
            yield b
        if not page.has_next_page():
            return
        if await rate.take(rt) > 0:
            yield None
            return
        page = await page.get_next_page()


async def recover(rt: Runtime, sub_id: str, h: dict[str, str]) -> str:
    """ "adopted", "waiting" or "resubmitted"."""
    wanted = set(orjson.loads(h["custom_ids"]))
    since = dt.datetime.fromtimestamp(int(h["created_ms"]) / 1000 - SKEW_S, dt.UTC)
    known = {
        m.decode() if isinstance(m, bytes) else str(m)
        for m in await aw(rt.redis.smembers(rt.keys.api_batch_ids))
    }
    waiting = False
    async for b in _created_since(rt, since):
        if b is None:
            return "waiting"  # no room in the batch RPM to read further: the next pass goes on
        c = b.request_counts
        total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
        if b.id in known or total != len(wanted):
            continue
        if b.processing_status != "ended":
            waiting = True
            continue
        if await rate.take(rt, rate.RESULTS_CALLS) > 0:
            return "waiting"
        got = {r.custom_id async for r in await rt.client.messages.batches.results(b.id)}
        if got == wanted:
            if await confirm(rt, sub_id, b.id):
                log.warning("intent %s: adopted orphan batch %s", sub_id, b.id)
            return "adopted"
    if waiting:
        return "waiting"
    back = await undo_intent(rt, sub_id)
    log.warning("intent %s: no batch was created; %d requests gathered again", sub_id, back)
    return "resubmitted"
