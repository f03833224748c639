"""``routeq batches``: routeq's Message Batches (submissions), newest first, from Redis alone."""

from __future__ import annotations

import time
from typing import Any

import orjson

from jobs.connections import aw
from jobs.keys import Keys

COUNT_NAMES = ("processing", "succeeded", "errored", "canceled", "expired")


async def list_batches(redis: Any, keys: Keys, limit: int = 50) -> list[dict[str, Any]]:
    subs = await aw(redis.zrevrange(keys.api_batches, 0, limit - 1))
    out: list[dict[str, Any]] = []
    now = time.time()
    for raw_sub in subs:
        sub = raw_sub.decode() if isinstance(raw_sub, bytes) else str(raw_sub)
        h = {a.decode(): b.decode() for a, b in (await aw(redis.hgetall(keys.api_batch(sub)))).items()}
        if not h:
            continue
        counts = (
            dict(zip(COUNT_NAMES, (int(x) for x in h["counts"].split(",")), strict=True))
            if "counts" in h
            else {}
        )
        out.append(
            {
                "id": h.get("batch_id"),
                "submission": sub,
                "model": h.get("model"),
                "status": h.get("status"),
                "api_status": h.get("api_status"),
                "requests": len(orjson.loads(h.get("custom_ids", "[]"))),
                "counts": counts,
                "age_s": round(now - int(h["created_ms"]) / 1000, 1),
                "expires_at": h.get("expires_at"),
            }
        )
    return out


def render(rows: list[dict[str, Any]]) -> str:
    hdr = f"{'batch id':<42}{'model':<22}{'status':<12}{'requests':>9}  {'succ/err/exp/canc':<18}"
    hdr += f"{'age':>8}  expires"
    lines = [hdr]
    for r in rows:
        c = r["counts"]
        tally = (
            "/".join(str(c.get(k, 0)) for k in ("succeeded", "errored", "expired", "canceled")) if c else "-"
        )
        status = r["api_status"] or r["status"]
        lines.append(
            f"{r['id'] or '(intent, no id yet)':<42}{r['model'] or '':<22}{status:<12}{r['requests']:>9}  "
            f"{tally:<18}{r['age_s']:>7.0f}s  {r['expires_at'] or '-'}"
        )
    return "\n".join(lines)
