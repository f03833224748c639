"""Shadow-quality counters and labels in Redis, and their export as a training CSV."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import IO, Any

from redis.asyncio import Redis

from jobs.connections import as_text
from jobs.contract import TaskType
from jobs.keys import SHADOW_COST_FIELD, Keys
from jobs.results import usd_float
from worker.policy.grading import CSV_COLUMNS, label_row

DEFAULT_MAX_LABELS = 50_000


# --- Redis bookkeeping ------------------------------------------------------------------------------
def _field(task: TaskType | str, tier: str, what: str) -> str:
    return f"{getattr(task, 'value', task)}:{getattr(tier, 'value', tier)}:{what}"


async def record_comparison(
    redis: Redis,
    keys: Keys,
    task: TaskType | str,
    tier: str,
    agree: bool,
    label: dict[str, Any],
    max_labels: int = DEFAULT_MAX_LABELS,
) -> None:
    """Count one shadow comparison and keep its labelled prompt (newest ``max_labels`` are kept).

    ``label`` should carry at least ``prompt``; task, tier, agree and a timestamp are added."""
    record = {
        **label,
        "task": getattr(task, "value", task),
        "tier": getattr(tier, "value", tier),
        "agree": agree,
        "ts": label.get("ts", time.time()),
    }
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hincrby(keys.quality, _field(task, tier, "agree"), int(agree))
        pipe.hincrby(keys.quality, _field(task, tier, "total"), 1)
        pipe.rpush(keys.quality_labels, json.dumps(record, ensure_ascii=False))
        pipe.ltrim(keys.quality_labels, -max_labels, -1)
        await pipe.execute()


async def quality_report(redis: Redis, keys: Keys) -> dict[str, Any]:
    """Agreement per task and tier: {"by": {"task:tier": {agree, total, rate}}, "overall", "labels"}."""
    raw: dict[Any, Any] = await redis.hgetall(keys.quality)  # type: ignore[misc]
    by: dict[str, dict[str, float]] = {}
    for f, v in raw.items():
        name = as_text(f)
        head, _, what = name.rpartition(":")
        if what not in ("agree", "total") or not head:
            continue
        by.setdefault(head, {"agree": 0, "total": 0})[what] = int(as_text(v))
    agree = total = 0
    for entry in by.values():
        entry["rate"] = entry["agree"] / entry["total"] if entry["total"] else 0.0
        agree += int(entry["agree"])
        total += int(entry["total"])
    shadow = int(as_text(raw.get(SHADOW_COST_FIELD.encode(), raw.get(SHADOW_COST_FIELD, b"0"))))
    return {
        "by": dict(sorted(by.items())),
        "overall": {"agree": agree, "total": total, "rate": agree / total if total else 0.0},
        "labels": int(await redis.llen(keys.quality_labels)),  # type: ignore[misc]
        "shadow_cost_pusd": shadow,
        "shadow_cost_usd": usd_float(shadow),
    }


async def export_labels(redis: Redis, keys: Keys, out: Path | str | IO[str]) -> int:
    """Write the kept shadow labels as a training CSV; returns the number of rows written."""
    raw: list[Any] = await redis.lrange(keys.quality_labels, 0, -1)  # type: ignore[misc]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for item in raw:
        try:
            label = json.loads(as_text(item))
        except json.JSONDecodeError:
            continue  # a foreign or damaged entry should not stop the export
        row = label_row(label) if isinstance(label, dict) else None
        if row is not None:
            writer.writerow(row)
            n += 1
    if isinstance(out, (str, Path)):
        Path(out).write_text(buf.getvalue(), encoding="utf-8")
    else:
        out.write(buf.getvalue())
    return n
