"""Pure shaping of Redis aggregates into the page's JSON: batch rows, overview, series, job rows.

Money arithmetic is ``jobs.reports``'s (``status_from``, ``build_report``), so every figure here is the
one `routeq report` prints.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

from jobs.reports import REPORT_FIELDS, build_report, status_from
from jobs.results import BATCH_ONLY, HTTP_FAULTS, JobResult, usd_float
from jobs.tiers import TIER_ORDER

# What the batch list reads of each batch's aggregate: the report's fields plus 429/529 per tier.
HTTP_FIELDS: tuple[str, ...] = tuple(f"tier:{t.value}:{f}" for t in TIER_ORDER for f in HTTP_FAULTS.values())
LIST_FIELDS: tuple[str, ...] = (*REPORT_FIELDS, *HTTP_FIELDS)

# Sort keys the batch list accepts (the page sorts the same way client-side).
SORT_KEYS = ("created_ms", "batch", "tenant", "enqueued", "done", "failed", "dead", "pending", "cost_usd")


def agg_from_values(fields: Sequence[str], values: Sequence[bytes | None]) -> dict[str, int]:
    """An HMGET answer as the ``{field: int}`` dict ``build_report`` takes (missing fields left out)."""
    return {f: int(v) for f, v in zip(fields, values, strict=True) if v is not None}


def sum_aggs(aggs: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for agg in aggs:
        for k, v in agg.items():
            total[k] = total.get(k, 0) + v
    return total


def _text(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


def batch_base(
    batch: str, meta_raw: dict[bytes, bytes], agg: dict[str, int], accepted: int, dead: int
) -> dict[str, Any]:
    """A batch's counts, spend and savings (from the report): a function of what was read only, so a
    batch that did not change since the last snapshot reuses it."""
    st = status_from(batch, meta_raw, agg, accepted, dead)
    rep = build_report(batch, agg, st)
    return {
        "batch": batch,
        "tenant": _text(meta_raw.get(b"tenant")),
        "enqueued": st["enqueued"],
        "done": st["done"],
        "failed": st["failed"],
        "canceled": st["canceled"],
        "dead": st["dead"],
        "pending": st["pending"],
        "cost_usd": rep["cost_usd"],
        "baseline_cost_usd": rep["baseline_cost_usd"],
        "savings_pct": rep["savings_pct"],
    }


def batch_row(base: dict[str, Any], created_ms: int, now_s: float, rate: float | None) -> dict[str, Any]:
    """One row of the batch list: the base plus age, rate and ETA."""
    pending = base["pending"]
    eta = round(pending / rate, 1) if pending and rate else (0.0 if not pending else None)
    return {
        **base,
        "created_ms": created_ms,
        "age_s": round(max(0.0, now_s - created_ms / 1000), 1),
        "jobs_per_s": round(rate, 2) if rate else 0.0,
        "eta_s": eta,
    }


def sort_rows(rows: list[dict[str, Any]], key: str, descending: bool) -> list[dict[str, Any]]:
    if key not in SORT_KEYS:
        raise ValueError(f"sort: unknown key {key!r} (one of {', '.join(SORT_KEYS)})")
    blank: Any = "" if key in ("batch", "tenant") else 0
    return sorted(rows, key=lambda r: r[key] if r[key] is not None else blank, reverse=descending)


def tier_rows(
    total: dict[str, int],
    depth: dict[str, int],
    in_flight: dict[str, int],
    limit: dict[str, int | None],
    cooldown_ms: dict[str, int],
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for t in TIER_ORDER:
        v = t.value
        out[v] = {
            "queue_depth": depth.get(v, 0),
            "in_flight": in_flight.get(v, 0),
            "limit": limit.get(v),
            "cooldown_s": round(max(0, cooldown_ms.get(v, 0)) / 1000, 1),
            "http_429": total.get(f"tier:{v}:http_429", 0),
            "http_529": total.get(f"tier:{v}:http_529", 0),
            "jobs": total.get(f"tier:{v}:jobs", 0),
            "cost_usd": usd_float(total.get(f"tier:{v}:cost_pusd", 0)),
        }
    return out


def levers(report: dict[str, Any], shadow_pusd: int, batch_discount_pusd: int | None) -> dict[str, Any]:
    """Savings split by lever against the all-top-tier, uncached baseline.

    ``batch_discount_usd`` is None until a batch-API mode records its discount (field
    ``batch_discount_pusd`` of an aggregate); the page shows it as not in use."""
    discount = usd_float(batch_discount_pusd) if batch_discount_pusd is not None else None
    net = report["baseline_pusd"] - report["cost_pusd"] - shadow_pusd
    return {
        "routing_usd": report["routing_savings_usd"],
        "caching_usd": report["cache_savings_usd"],
        "batch_discount_usd": discount,
        "shadow_spend_usd": usd_float(shadow_pusd),
        "net_savings_usd": usd_float(net),
    }


def overview(
    total: dict[str, int],
    tiers: dict[str, dict[str, Any]],
    *,
    intake_depth: int,
    workers_alive: int,
    workers_registered: int,
    shadow_pusd: int,
    batches: int,
    jobs_per_s: float,
) -> dict[str, Any]:
    rep = build_report("*", total)
    return {
        "batches": batches,
        "jobs": rep["jobs"],
        "done": rep["done"],
        "failed": rep["failed"],
        "canceled": rep["canceled"],
        "cost_usd": rep["cost_usd"],
        "baseline_cost_usd": rep["baseline_cost_usd"],
        "savings_pct": rep["savings_pct"],
        "cache_hit_rate": rep["cache_hit_rate"],
        "cost_pusd": rep["cost_pusd"],
        "baseline_pusd": rep["baseline_pusd"],
        "levers": levers(rep, shadow_pusd, total.get("batch_discount_pusd")),
        "jobs_per_s": round(jobs_per_s, 2),
        "intake_depth": intake_depth,
        "workers": {"alive": workers_alive, "registered": workers_registered},
        "tiers": tiers,
    }


def series(agg: dict[str, int]) -> dict[str, list[list[float]]]:
    """Per tier: ``[[minute start (epoch s), cost USD, jobs], ...]`` in time order, from ``@m:`` fields."""
    cells: dict[str, dict[int, list[float]]] = {}
    for field, v in agg.items():
        if not field.startswith(BATCH_ONLY + "m:"):
            continue
        _, minute, tier, what = field.split(":", 3)
        cell = cells.setdefault(tier, {}).setdefault(int(minute), [int(minute) * 60, 0.0, 0])
        if what == "cost":
            cell[1] = usd_float(v)
        elif what == "jobs":
            cell[2] = v
    return {
        t.value: [cells[t.value][m] for m in sorted(cells[t.value])] for t in TIER_ORDER if t.value in cells
    }


def escalation_rows(agg: dict[str, int]) -> list[dict[str, Any]]:
    """``esc:<from tier>:<reason>`` counters as rows, most frequent first."""
    rows = []
    for field, n in agg.items():
        if field.startswith("esc:") and n:
            _, tier, reason = field.split(":", 2)
            rows.append({"from_tier": tier, "reason": reason, "jobs": n})
    return sorted(rows, key=lambda r: (-r["jobs"], r["from_tier"], r["reason"]))


def dead_row(job_id: str, cause: dict[str, Any], show_content: bool) -> dict[str, Any]:
    """A dead letter without the job's payload (prompt, documents) unless content is shown."""
    job = cause.get("job") or {}
    row: dict[str, Any] = {
        "job_id": job_id,
        "id": job.get("id"),  # the caller's name for the job
        "error_type": cause.get("error_type"),
        "error": cause.get("error"),
        "attempts": cause.get("attempts"),
        "at": cause.get("at"),
        "task": job.get("task"),
        "retryable": "job" in cause,
    }
    if show_content:
        row["prompt"] = job.get("prompt")
    return row


def trace_link(jaeger_url: str | None, job_id: str) -> str | None:
    """A Jaeger search for the job's spans (``routeq.job_id`` is set on every job span)."""
    if not jaeger_url:
        return None
    tags = urllib.parse.quote(f'{{"routeq.job_id":"{job_id}"}}')
    return f"{jaeger_url.rstrip('/')}/search?service=routeq-worker&tags={tags}"


def job_row(r: JobResult, show_content: bool, jaeger_url: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_id": r.job_id,
        "status": r.status,
        "task": r.task,
        "tier": r.tier.value if r.tier else None,
        "route_tier": r.route.tier.value if r.route else None,
        "reason": r.route.reason if r.route else None,
        "attempts": len(r.attempts),
        "cost_usd": usd_float(r.cost.total_pusd),
        "latency_ms": r.latency_ms,
        "error_type": r.error_type,
        "trace_url": trace_link(jaeger_url, r.job_id),
    }
    if show_content:
        row["output"] = r.output
    return row
