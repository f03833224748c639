"""``routeq cancel BATCH``: end a routeq batch's batch-mode requests, and cancel the API batches holding them.

The routeq batch is flagged first, so every canceled result ingested from then on ends its job as
canceled; requests still gathering are taken out of their sets and end at once. A canceled result of
another routeq batch that shared the API batch runs again instead (see ``outcome.next_step``).
Requests already answered keep their answers: they were paid for.
"""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from jobs.connections import aw
from worker.batches import rate
from worker.batches.gather import BatchItem
from worker.batches.poll import ingest_result
from worker.runtime import Runtime


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def cancel_batch(rt: Runtime, batch: str) -> dict[str, int]:
    k = rt.keys
    await aw(rt.redis.hset(k.batch_meta(batch), "canceled", "1"))
    mine: dict[str, BatchItem] = {}
    size: dict[str, int] = {}
    async for cid, raw in rt.redis.hscan_iter(k.batch_items):
        item = BatchItem.model_validate_json(raw)
        if (item.job.get("tags") or {}).get("batch") == batch:
            mine[_s(cid)], size[_s(cid)] = item, len(raw)
    gathered = 0
    for cid, item in mine.items():
        if await rt.redis.zrem(k.batch_gather(item.model), cid):
            await aw(rt.redis.hincrby(k.batch_gather_bytes, item.model, -size[cid]))
            await ingest_result(rt, item, SimpleNamespace(type="canceled"), "")
            await aw(rt.redis.hdel(k.batch_items, cid))
            await aw(rt.redis.srem(k.batch_in_api(batch), item.job_id))
            gathered += 1
    api = 0
    for sub in await aw(rt.redis.zrange(k.api_batches_open, 0, -1)):
        h = {_s(a): _s(b) for a, b in (await aw(rt.redis.hgetall(k.api_batch(_s(sub))))).items()}
        if "batch_id" in h and set(orjson.loads(h.get("custom_ids", "[]"))) & mine.keys():
            await rate.wait(rt)
            await rt.client.messages.batches.cancel(h["batch_id"])
            api += 1
    return {"gathered_canceled": gathered, "api_batches_canceled": api}
