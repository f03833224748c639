"""Submit a model's gathered requests as one Message Batch; one submitter per model across the fleet.

Protocol (docs/design.md, "Message Batches"): take the requests into an INTENT record (one Lua call),
``create``, then record the batch id. A refused create (the API answered with an error: no batch was
made) puts the requests back and backs the model off; an unanswered one (timeout, lost connection)
leaves the intent for :mod:`worker.batches.recover`, which looks for the batch before resubmitting.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import anthropic
import orjson

from jobs import telemetry
from jobs.connections import aw
from worker.batches import rate
from worker.batches.gather import BatchItem
from worker.fleet.redis_scripts import Scripts
from worker.observe import tracing
from worker.runtime import Runtime

log = logging.getLogger("routeq.batches")


def lease_ms(rt: Runtime) -> int:
    """How long a submitter may hold a model: longer than its create call can take."""
    return int(rt.settings.call_timeout_s * 1000) + 5000


def due(
    count: int,
    size: int,
    oldest_ms: float | None,
    now_ms: float,
    *,
    max_requests: int,
    max_bytes: int,
    window_ms: float,
) -> bool:
    """Whether a gathering set should be submitted now (pure)."""
    if count == 0:
        return False
    return (
        count >= max_requests
        or size >= max_bytes
        or (oldest_ms is not None and now_ms - oldest_ms >= window_ms)
    )


async def maybe_submit(rt: Runtime, model: str, owner: str) -> str | None:
    """Submit one batch for ``model`` if it is due and no other process is; the API batch id, or None."""
    k, s = rt.keys, rt.settings
    async with rt.redis.pipeline(transaction=False) as p:
        p.zcard(k.batch_gather(model))
        p.hget(k.batch_gather_bytes, model)
        p.zrange(k.batch_gather(model), 0, 0, withscores=True)
        p.exists(k.batch_backoff(model))
        p.time()
        p.get(k.batch_size_cap(model))
        p.get(k.batch_in_api_count)
        count, size, oldest, backoff, (sec, usec), size_cap, in_api = await p.execute()
    max_requests = min(s.batch_max_requests, int(size_cap)) if size_cap else s.batch_max_requests
    now_ms = sec * 1000 + usec / 1000
    # A full queue is checked here too (batch_take holds it exactly), so a wait for room spends no call
    # from the batch RPM.
    queue_full = s.batch_queue_cap is not None and int(in_api or 0) >= s.batch_queue_cap
    if (
        backoff
        or queue_full
        or not due(
            int(count),
            int(size or 0),
            oldest[0][1] if oldest else None,
            now_ms,
            max_requests=max_requests,
            max_bytes=s.batch_max_bytes,
            window_ms=s.batch_window_s * 1000,
        )
    ):
        return None
    if not await rt.redis.set(k.batch_submitter(model), owner, nx=True, px=lease_ms(rt)):
        return None
    try:
        return await _submit(rt, model, owner, max_requests)
    finally:
        await Scripts(rt.redis)["batch_release"](keys=[k.batch_submitter(model)], args=[owner])


async def _submit(rt: Runtime, model: str, owner: str, max_requests: int) -> str | None:
    k, s = rt.keys, rt.settings
    if await rate.take(rt) > 0:
        return None  # no room in the batch RPM: the requests stay gathered for a later tick
    scripts = Scripts(rt.redis)
    sub_id = uuid.uuid4().hex
    taken = await scripts["batch_take"](
        keys=[
            k.batch_gather(model),
            k.batch_items,
            k.batch_gather_bytes,
            k.api_batch(sub_id),
            k.api_batches_open,
            k.api_batches,
            k.batch_in_api_count,
        ],
        args=[max_requests, s.batch_max_bytes, sub_id, model, owner, s.batch_queue_cap or 0],
    )
    if not taken:
        return None
    cids = [c.decode() if isinstance(c, bytes) else str(c) for c in taken[1:]]
    raws = await aw(rt.redis.hmget(k.batch_items, cids))
    requests: list[Any] = []
    carriers: list[dict[str, str]] = []
    for cid, raw in zip(cids, raws, strict=True):
        if raw is not None:
            item = BatchItem.model_validate_json(raw)
            requests.append({"custom_id": cid, "params": item.params})
            carriers.append(item.trace)
    try:
        with tracing.api_batch_span(model, len(requests), carriers) as span:
            # Kept on the submission, so each job's result span can link back to this one.
            span_context = telemetry.inject_context() if telemetry.tracing_enabled() else {}
            batch = await rt.client.messages.batches.create(requests=requests)
            span.set_attribute("anthropic.message.batch.id", batch.id)
    except anthropic.APIStatusError as e:
        # The API answered: no batch exists. Put the requests back and let the model rest a while.
        retry_after = e.response.headers.get("retry-after")
        delay_s = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else 5.0
        await undo_intent(rt, sub_id)
        await rt.redis.set(k.batch_backoff(model), e.status_code, px=max(100, int(delay_s * 1000)))
        if e.status_code == 413 and len(requests) > 1:
            # Too large (count or bytes): halve the next batch for a while.
            await rt.redis.set(k.batch_size_cap(model), len(requests) // 2, px=3_600_000)
        log.warning(
            "batch create for %s refused (%s); %d requests back, retry in %.1fs",
            model,
            e.status_code,
            len(requests),
            delay_s,
        )
        return None
    except (anthropic.APIConnectionError, anthropic.APITimeoutError):
        # No answer: a batch may exist. Recovery finds it (or finds none) once this lease has expired.
        log.warning("batch create for %s unanswered; intent %s left for recovery", model, sub_id)
        return None
    await confirm(rt, sub_id, batch.id, span_context)
    log.info("submitted %s for %s: %d requests", batch.id, model, len(requests))
    return batch.id


async def confirm(
    rt: Runtime, sub_id: str, batch_id: str, span_context: dict[str, str] | None = None
) -> bool:
    """Record the batch id (and the W3C context of its create span, when traced) on the intent, once."""
    k = rt.keys
    script = Scripts(rt.redis)["batch_confirm"]
    trace = orjson.dumps(span_context).decode() if span_context else ""
    keys = [k.api_batch(sub_id), k.api_batch_ids]
    return bool(await script(keys=keys, args=[batch_id, "submitted", trace]))


async def undo_intent(rt: Runtime, sub_id: str) -> int:
    k = rt.keys
    model = await aw(rt.redis.hget(k.api_batch(sub_id), "model"))
    if model is None:
        return 0
    keys = [
        k.api_batch(sub_id),
        k.batch_gather(model.decode() if isinstance(model, bytes) else str(model)),
        k.batch_items,
        k.batch_gather_bytes,
        k.api_batches_open,
        k.api_batches,
        k.batch_in_api_count,
    ]
    return int(await Scripts(rt.redis)["batch_return"](keys=keys, args=[sub_id]))
