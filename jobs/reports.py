"""Reading a batch back: status counts, per-job results, and the cost report (exact integer sums)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from redis.asyncio import Redis

from jobs.connections import aw
from jobs.keys import Keys
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
    return {k.decode(): int(v) for k, v in h.items()}


async def batch_status(redis: Redis, keys: Keys, batch: str) -> dict[str, Any]:
    async with redis.pipeline(transaction=False) as p:
        p.hgetall(keys.batch_meta(batch))
        p.hgetall(keys.batch_agg(batch))
        p.scard(keys.batch_jobs(batch))
        p.hlen(keys.batch_dead(batch))
        p.zcount(keys.batch_held(batch), f"({int(time.time() * 1000)}", "+inf")
        meta_raw, agg_raw, accepted, dead, held = await p.execute()
    meta, agg = _ints(meta_raw), _ints(agg_raw)
    done, failed = agg.get("done", 0), agg.get("failed", 0)
    return {
        "batch": batch,
        "exists": bool(meta_raw),
        "enqueued": int(accepted),
        "duplicates": meta.get("duplicates", 0),
        "rejected": meta.get("rejected", 0),
        "done": done,
        "failed": failed,
        "dead": int(dead),
        "pending": max(0, int(accepted) - done - failed),
        "held": int(held),  # of the pending: waiting for a budget cap to rise (ROUTEQ_BUDGET_ACTION=hold)
    }


async def iter_results(
    redis: Redis, keys: Keys, batch: str, chunk: int = 500
) -> AsyncIterator[dict[str, Any]]:
    """Every accepted job of the batch, finished or not (unfinished ones have status "pending")."""
    ids = sorted(m.decode() for m in await aw(redis.smembers(keys.batch_jobs(batch))))
    for i in range(0, len(ids), chunk):
        part = ids[i : i + chunk]
        raws = await redis.mget([keys.result(j) for j in part])
        for job_id, raw in zip(part, raws, strict=True):
            if raw is None:
                yield {"job_id": job_id, "status": "pending"}
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
    prompt_in = sum(
        agg.get(f"tier:{t.value}:{k}", 0) for t in TIER_ORDER for k in TOKEN_KINDS if k != "output_tokens"
    )
    reads = sum(agg.get(f"tier:{t.value}:cache_read_tokens", 0) for t in TIER_ORDER)
    return {
        "batch": batch,
        "jobs": agg.get("jobs", 0),
        "done": agg.get("done", 0),
        "failed": agg.get("failed", 0),
        "pending": (status or {}).get("pending", 0),
        "cost_usd": usd_float(cost),
        "baseline_cost_usd": usd_float(baseline),
        "savings_pct": round(100.0 * (baseline - cost) / baseline, 2) if baseline else 0.0,
        "routing_savings_usd": usd_float(baseline - uncached),
        "cache_savings_usd": usd_float(uncached - cost),
        "cache_hit_rate": round(reads / prompt_in, 4) if prompt_in else 0.0,
        "cost_pusd": cost,
        "baseline_pusd": baseline,
        "tiers": tiers,
    }


async def batch_report(redis: Redis, keys: Keys, batch: str) -> dict[str, Any]:
    agg = _ints(await aw(redis.hgetall(keys.batch_agg(batch))))
    return build_report(batch, agg, await batch_status(redis, keys, batch))


def render_report(rep: dict[str, Any]) -> str:
    lines = [
        f"batch {rep['batch']}: {rep['jobs']} jobs finished ({rep['done']} done, {rep['failed']} failed"
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
    lines.append(f"{'total cost':<30}${rep['cost_usd']:.6f}")
    lines.append(f"{'all on ' + Tier.opus.value + ', no caching':<30}${rep['baseline_cost_usd']:.6f}")
    lines.append(
        f"{'savings':<30}{rep['savings_pct']:.1f}%  (routing ${rep['routing_savings_usd']:.6f}, "
        f"caching ${rep['cache_savings_usd']:.6f}; cache hit rate {100 * rep['cache_hit_rate']:.1f}%)"
    )
    return "\n".join(lines)


async def dead_letters(redis: Redis, keys: Keys, batch: str) -> dict[str, Any]:
    raw = await aw(redis.hgetall(keys.batch_dead(batch)))
    return {k.decode(): orjson.loads(v) for k, v in sorted(raw.items())}
