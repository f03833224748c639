"""Reading a batch back: status counts, per-job results, and the cost report (exact integer sums)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from redis.asyncio import Redis

from jobs.connections import aw
from jobs.keys import SHADOW_COST_FIELD, Keys
from jobs.results import JobResult, usd_float
from jobs.tiers import TIER_ORDER, Tier

TOKEN_KINDS = (
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
)


def _ints(h: dict[bytes, bytes]) -> dict[str, int]:
    """The integer fields of a hash (a batch's meta also holds its tenant's name)."""
    return {k.decode(): int(v) for k, v in h.items() if v.lstrip(b"-").isdigit()}


def _meta_ints(h: dict[bytes, bytes]) -> dict[str, int]:
    """The counters of a batch's meta hash (it also holds text, e.g. the tenant)."""
    return {k.decode(): int(v) for k, v in h.items() if v.lstrip(b"-").isdigit()}


# The aggregate fields ``build_report`` reads: enough to build a report from an HMGET of a batch's agg.
REPORT_FIELDS: tuple[str, ...] = (
    "jobs",
    "done",
    "failed",
    "canceled",
    "cost_pusd",
    "baseline_pusd",
    "uncached_pusd",
    *(f"tier:{t.value}:{k}" for t in TIER_ORDER for k in ("jobs", "calls", *TOKEN_KINDS, "cost_pusd")),
)


def status_from(
    batch: str,
    meta_raw: dict[bytes, bytes],
    agg: dict[str, int],
    accepted: int,
    dead: int,
    in_api: int = 0,
    held: int = 0,
) -> dict[str, Any]:
    """``batch_status`` from what it reads: meta hash, aggregate, accepted-set size, dead-letter count,
    and how many requests wait in a Message Batch."""
    meta = _meta_ints(meta_raw)
    done, failed, canceled = agg.get("done", 0), agg.get("failed", 0), agg.get("canceled", 0)
    tenant = meta_raw.get(b"tenant")
    return {
        "batch": batch,
        "tenant": tenant.decode() if tenant else None,
        "exists": bool(meta_raw),
        "enqueued": int(accepted),
        "duplicates": meta.get("duplicates", 0),
        "rejected": meta.get("rejected", 0),
        "done": done,
        "failed": failed,
        "canceled": canceled,  # by `routeq cancel`: neither failed nor dead letters
        "dead": int(dead),
        "pending": max(0, int(accepted) - done - failed - canceled),
        "in_api_batch": int(in_api),  # of the pending: requests waiting in a Message Batch
        "held": int(held),  # of the pending: waiting for a budget cap to rise (ROUTEQ_BUDGET_ACTION=hold)
    }


async def batch_status(redis: Redis, keys: Keys, batch: str) -> dict[str, Any]:
    async with redis.pipeline(transaction=False) as p:
        p.hgetall(keys.batch_meta(batch))
        p.hgetall(keys.batch_agg(batch))
        p.scard(keys.batch_jobs(batch))
        p.hlen(keys.batch_dead(batch))
        p.scard(keys.batch_in_api(batch))
        p.zcount(keys.batch_held(batch), f"({int(time.time() * 1000)}", "+inf")
        meta_raw, agg_raw, accepted, dead, in_api, held = await p.execute()
    return status_from(batch, meta_raw, _ints(agg_raw), accepted, dead, in_api, held)


async def iter_results(
    redis: Redis, keys: Keys, batch: str, chunk: int = 500
) -> AsyncIterator[dict[str, Any]]:
    """Every accepted job of the batch, finished or not (unfinished ones have status "pending", or
    "in_api_batch" while their request waits in a Message Batch)."""
    ids = sorted(m.decode() for m in await aw(redis.smembers(keys.batch_jobs(batch))))
    in_api = {m.decode() for m in await aw(redis.smembers(keys.batch_in_api(batch)))}
    for i in range(0, len(ids), chunk):
        part = ids[i : i + chunk]
        async with redis.pipeline(transaction=False) as p:
            p.mget([keys.result(j) for j in part])
            p.hmget(keys.batch_ids(batch), part)
            raws, recs = await p.execute()
        for job_id, raw, rec in zip(part, raws, recs, strict=True):
            if raw is None:
                # the caller's id is what follows the content digest in the batch's id record
                caller = rec.decode().partition(" ")[2] if rec else None
                status = "in_api_batch" if job_id in in_api else "pending"
                yield {"job_id": job_id, "id": caller, "status": status}
            else:
                yield JobResult.model_validate_json(raw).public()


async def load_result(redis: Redis, keys: Keys, job_id: str) -> JobResult | None:
    raw = await redis.get(keys.result(job_id))
    return None if raw is None else JobResult.model_validate_json(raw)


def build_report(batch: str, agg: dict[str, int], status: dict[str, Any] | None = None) -> dict[str, Any]:
    tiers: dict[str, dict[str, Any]] = {}
    for t in TIER_ORDER:
        row = {k: agg.get(f"tier:{t.value}:{k}", 0) for k in ("jobs", "calls", *TOKEN_KINDS, "cost_pusd")}
        if not any(row.values()):
            continue
        tiers[t.value] = {
            "jobs": row["jobs"],
            "calls": row["calls"],
            "input_tokens": row["input_tokens"],
            "output_tokens": row["output_tokens"],
            "cache_write_tokens": row["cache_write_5m_tokens"] + row["cache_write_1h_tokens"],
            "cache_write_5m_tokens": row["cache_write_5m_tokens"],
            "cache_write_1h_tokens": row["cache_write_1h_tokens"],
            "cache_read_tokens": row["cache_read_tokens"],
            "cost_usd": usd_float(row["cost_pusd"]),
            "cost_pusd": row["cost_pusd"],
        }
    cost, baseline, uncached = (
        agg.get("cost_pusd", 0),
        agg.get("baseline_pusd", 0),
        agg.get("uncached_pusd", 0),
    )
    # Shadow runs (quality monitoring) are spend too: the savings are net of them.
    shadow = agg.get(SHADOW_COST_FIELD, 0)
    total = cost + shadow
    # What the same calls cost at standard rates; the gap to ``cost`` is the Message Batches discount.
    standard = agg.get("standard_pusd", cost)
    prompt_in = sum(
        agg.get(f"tier:{t.value}:{k}", 0) for t in TIER_ORDER for k in TOKEN_KINDS if k != "output_tokens"
    )
    reads = sum(agg.get(f"tier:{t.value}:cache_read_tokens", 0) for t in TIER_ORDER)
    return {
        "batch": batch,
        "jobs": agg.get("jobs", 0),
        "done": agg.get("done", 0),
        "failed": agg.get("failed", 0),
        "canceled": agg.get("canceled", 0),
        "pending": (status or {}).get("pending", 0),
        "cost_usd": usd_float(cost),
        "shadow_cost_usd": usd_float(shadow),
        "total_cost_usd": usd_float(total),
        "baseline_cost_usd": usd_float(baseline),
        "savings_pct": round(100.0 * (baseline - total) / baseline, 2) if baseline else 0.0,
        "routing_savings_usd": usd_float(baseline - uncached),
        "cache_savings_usd": usd_float(uncached - standard),
        "batch_savings_usd": usd_float(standard - cost),
        "cache_hit_rate": round(reads / prompt_in, 4) if prompt_in else 0.0,
        "cost_pusd": cost,
        "shadow_cost_pusd": shadow,
        "total_cost_pusd": total,
        "baseline_pusd": baseline,
        "standard_pusd": standard,
        "tiers": tiers,
        "escalated": agg.get("escalated", 0),
        "escalated_why": {
            k.removeprefix("escalated:why:"): v
            for k, v in sorted(agg.items())
            if k.startswith("escalated:why:")
        },
    }


async def batch_report(redis: Redis, keys: Keys, batch: str) -> dict[str, Any]:
    agg = _ints(await aw(redis.hgetall(keys.batch_agg(batch))))
    return build_report(batch, agg, await batch_status(redis, keys, batch))


def render_report(rep: dict[str, Any]) -> str:
    lines = [
        f"batch {rep['batch']}: {rep['jobs']} jobs finished ({rep['done']} done, {rep['failed']} failed"
        + (f", {rep['canceled']} canceled" if rep.get("canceled") else "")
        + (f", {rep['pending']} pending" if rep.get("pending") else "")
        + ")"
    ]
    hdr = (
        f"{'tier':<8}{'jobs':>7}{'calls':>7}{'input':>12}{'output':>10}"
        f"{'cache wr':>11}{'cache rd':>11}{'cost $':>13}"
    )
    lines += [hdr, "-" * len(hdr)]
    for t in TIER_ORDER:
        r = rep["tiers"].get(t.value)
        if r:
            lines.append(
                f"{t.value:<8}{r['jobs']:>7}{r['calls']:>7}{r['input_tokens']:>12}{r['output_tokens']:>10}"
                f"{r['cache_write_tokens']:>11}{r['cache_read_tokens']:>11}{r['cost_usd']:>13.6f}"
            )
    lines.append("-" * len(hdr))
    if rep.get("escalated"):
        why = ", ".join(f"{k} {v}" for k, v in sorted(rep["escalated_why"].items(), key=lambda kv: -kv[1]))
        lines.append(f"{'escalated':<30}{rep['escalated']} jobs (why: {why})")
    if rep.get("shadow_cost_pusd"):
        lines.append(f"{'jobs cost':<30}${rep['cost_usd']:.6f}")
        lines.append(f"{'shadow quality checks':<30}${rep['shadow_cost_usd']:.6f}")
        lines.append(f"{'total cost':<30}${rep['total_cost_usd']:.6f}")
    else:
        lines.append(f"{'total cost':<30}${rep['cost_usd']:.6f}")
    lines.append(f"{'all on ' + Tier.opus.value + ', no caching':<30}${rep['baseline_cost_usd']:.6f}")
    lines.append(
        f"{'savings':<30}{rep['savings_pct']:.1f}%  (routing ${rep['routing_savings_usd']:.6f}, "
        f"caching ${rep['cache_savings_usd']:.6f}, batch discount ${rep.get('batch_savings_usd', 0.0):.6f}"
        + (f", less shadow checks ${rep['shadow_cost_usd']:.6f}" if rep.get("shadow_cost_pusd") else "")
        + f"; cache hit rate {100 * rep['cache_hit_rate']:.1f}%)"
    )
    return "\n".join(lines)


async def dead_letters(redis: Redis, keys: Keys, batch: str) -> dict[str, Any]:
    raw = await aw(redis.hgetall(keys.batch_dead(batch)))
    return {k.decode(): orjson.loads(v) for k, v in sorted(raw.items())}
