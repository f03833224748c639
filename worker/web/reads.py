"""The Redis reads behind the UI. A snapshot costs a handful of pipelined round trips whatever the number of
clients, and reads only aggregates: per batch its meta, its aggregate's list fields, the sizes of its
job set and dead-letter hash; per tier queue depth, leases, cooldown; the liveness keys of workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis

from jobs.connections import aw
from jobs.keys import SHADOW_COST_FIELD
from jobs.reports import batch_report, dead_letters
from jobs.results import JobResult
from jobs.settings import Settings
from jobs.tiers import TIER_ORDER
from worker.fleet.limit_config import limits_detail
from worker.fleet.quality import quality_report
from worker.fleet.redis_scripts import Scripts, WriteBatch
from worker.web import snapshot as shape

# Rate of finished jobs per batch: (now, {batch: finished}) -> {batch: jobs/s}; kept by the hub.
RateFn = Callable[[float, dict[str, int]], dict[str, float]]

JOBS_PAGE = 50
# Batches read per script call: each call holds Redis for well under a millisecond per hundred.
BATCHES_PER_CALL = 200


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


async def read_snapshot(
    redis: Redis, settings: Settings, rates: RateFn, memo: dict[str, tuple[Any, dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """``memo`` (batch -> (what was read, row base)) carries rows over from the last snapshot."""
    memo = {} if memo is None else memo
    keys = settings.keys
    now = time.time()
    now_ms = int(now * 1000)
    retention_ms = (settings.job_expiry_s + settings.result_ttl_s) * 1000
    async with redis.pipeline(transaction=False) as p:
        p.zrangebyscore(keys.batches, now_ms - retention_ms, "+inf", withscores=True)
        p.smembers(keys.recovery_owners)
        p.zcard(keys.intake_queue)
        for t in TIER_ORDER:
            p.zcard(keys.tier_queue(t))
            p.zcount(keys.leases(t), now_ms, "+inf")
            p.pttl(keys.cooldown(t))
        head = await p.execute()
    batches: list[tuple[bytes, float]] = head[0]
    owners = sorted(_s(o) for o in head[1])
    intake_depth = int(head[2])
    per_tier = head[3:]
    depth = {t.value: int(per_tier[3 * i]) for i, t in enumerate(TIER_ORDER)}
    in_flight = {t.value: int(per_tier[3 * i + 1]) for i, t in enumerate(TIER_ORDER)}
    cooldown = {t.value: int(per_tier[3 * i + 2]) for i, t in enumerate(TIER_ORDER)}

    rows_raw: list[Any] = []
    writes = WriteBatch(redis)
    script = Scripts(redis)["ui_batches"]
    for lo in range(0, len(batches), BATCHES_PER_CALL):
        chunk = [_s(b) for b, _ in batches[lo : lo + BATCHES_PER_CALL]]
        keys_ = [
            k
            for b in chunk
            for k in (keys.batch_meta(b), keys.batch_agg(b), keys.batch_jobs(b), keys.batch_dead(b))
        ]
        writes.script(script, keys_, list(shape.LIST_FIELDS), rows_raw.extend)
    await writes.execute()
    async with redis.pipeline(transaction=False) as p:
        for o in owners:
            p.exists(keys.recovery_alive(o))
        alive = sum(int(x) for x in await p.execute())
    detail = await limits_detail(redis, keys, settings)
    limit = {t.value: detail[t]["concurrency"].value for t in TIER_ORDER}

    aggs: list[dict[str, int]] = []
    pending: list[tuple[str, int, dict[str, Any], dict[str, int]]] = []
    seen: set[str] = set()
    for (raw_id, score), (meta_flat, values, accepted, dead) in zip(batches, rows_raw, strict=True):
        if not meta_flat:
            continue  # expired: the batches index outlives a batch's own keys
        batch = _s(raw_id)
        agg = shape.agg_from_values(shape.LIST_FIELDS, values)
        signature = (tuple(meta_flat), tuple(values), accepted, dead)
        hit = memo.get(batch)
        if hit is None or hit[0] != signature:
            meta_raw = dict(zip(meta_flat[::2], meta_flat[1::2], strict=True))
            hit = memo[batch] = (signature, shape.batch_base(batch, meta_raw, agg, int(accepted), int(dead)))
        seen.add(batch)
        aggs.append(agg)
        pending.append((batch, int(score), hit[1], agg))
    for gone in set(memo) - seen:
        del memo[gone]
    finished = {
        b: agg.get("done", 0) + agg.get("failed", 0) + agg.get("canceled", 0) for b, _, _, agg in pending
    }
    rate = rates(now, finished)
    rows = [shape.batch_row(base, created, now, rate.get(b)) for b, created, base, _ in pending]
    total = shape.sum_aggs(aggs)
    quality = await read_quality(redis, settings)
    ov = shape.overview(
        total,
        shape.tier_rows(total, depth, in_flight, limit, cooldown),
        intake_depth=intake_depth,
        workers_alive=alive,
        workers_registered=len(owners),
        shadow_pusd=quality["shadow_cost_pusd"],
        batches=len(rows),
        jobs_per_s=rate.get("*", 0.0),
    )
    rows.sort(key=lambda r: r["created_ms"], reverse=True)
    return {"ts": now, "overview": ov, "quality": quality, "batches": rows}


async def read_quality(redis: Redis, settings: Settings) -> dict[str, Any]:
    rep = await quality_report(redis, settings.keys)
    shadow = await aw(redis.hget(settings.keys.quality, SHADOW_COST_FIELD))
    rep["shadow_cost_pusd"] = int(shadow or 0)
    rep["calibration"] = None  # per-task calibration is not recorded yet
    return rep


async def read_batch(redis: Redis, settings: Settings, batch: str) -> dict[str, Any] | None:
    """The detail page: the batch's report (what `routeq report --json` prints), its status, the
    per-minute series, escalations and dead letters. One batch: its whole aggregate is read."""
    keys = settings.keys
    if not await aw(redis.exists(keys.batch_meta(batch))):
        return None
    report = await batch_report(redis, keys, batch)
    raw = await aw(redis.hgetall(keys.batch_agg(batch)))
    agg = {k.decode(): int(v) for k, v in raw.items()}
    dead = await dead_letters(redis, keys, batch)
    meta = await aw(redis.hgetall(keys.batch_meta(batch)))
    return {
        "batch": batch,
        "tenant": _s(meta[b"tenant"]) if b"tenant" in meta else None,
        "created_ms": int(meta.get(b"created_ms", 0)),
        "report": report,
        "http": {k: agg.get(k, 0) for k in shape.HTTP_FIELDS if agg.get(k)},
        "series": shape.series(agg),
        "escalations": shape.escalation_rows(agg),
        "dead": [shape.dead_row(j, c, settings.ui_show_content) for j, c in dead.items()],
    }


async def read_jobs(
    redis: Redis, settings: Settings, batch: str, cursor: int, count: int = JOBS_PAGE
) -> dict[str, Any]:
    """A page of the batch's jobs by SSCAN cursor (bounded work per page, whatever the batch's size)."""
    keys = settings.keys
    ids: list[str] = []
    cur = cursor
    while len(ids) < count:
        cur, part = await aw(redis.sscan(keys.batch_jobs(batch), cur, count=count))
        ids += [_s(x) for x in part]
        if cur == 0:
            break
    raws = await redis.mget([keys.result(j) for j in ids]) if ids else []
    rows: list[dict[str, Any]] = []
    for job_id, raw in zip(ids, raws, strict=True):
        if raw is None:
            rows.append({"job_id": job_id, "status": "pending"})
        else:
            r = JobResult.model_validate_json(raw)
            rows.append(shape.job_row(r, settings.ui_show_content, settings.jaeger_url))
    return {"batch": batch, "jobs": rows, "next_cursor": int(cur) or None}


def encode(obj: Any) -> bytes:
    return orjson.dumps(obj)
