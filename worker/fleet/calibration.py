"""Calibration in Redis: labels in from shadow runs, calibrated cascades out to running workers.

Labels are the shadow runs' entries in ``Keys.quality_labels`` that carry the cheap answer's check
signals. A calibration is stored per task in ``Keys.calibration``; every worker re-reads that hash every
few seconds (``refresh_forever``) into ``Runtime.cascade_thresholds`` and ``Runtime.check_coefficients``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from redis.asyncio import Redis

from jobs.connections import aw
from jobs.keys import Keys
from worker.policy.answer_checks import family_of
from worker.policy.answer_checks.score import Coefficients
from worker.policy.calibration import Calibration, Label

log = logging.getLogger("routeq.calibration")
REFRESH_S = 2.0


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


async def load_labels(
    redis: Redis, keys: Keys, task: str | None = None
) -> dict[tuple[str, str], list[Label]]:
    """Labels with check signals, grouped by (task, cheap tier)."""
    raw: list[Any] = await aw(redis.lrange(keys.quality_labels, 0, -1))
    out: dict[tuple[str, str], list[Label]] = {}
    for item in raw:
        try:
            rec = json.loads(_s(item))
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("check_signals"), dict):
            continue
        t = str(rec.get("task", ""))
        if task is not None and t != task:
            continue
        sig = {str(k): float(v) for k, v in rec["check_signals"].items() if isinstance(v, int | float)}
        key = str(rec.get("job_id") or rec.get("ts"))
        out.setdefault((t, str(rec.get("tier", ""))), []).append(Label(key, sig, bool(rec.get("agree"))))
    return out


async def store(redis: Redis, keys: Keys, cals: list[Calibration]) -> int:
    """Store the fitted (non-fallback) calibrations, merged per task; returns how many were stored."""
    stored = 0
    for cal in cals:
        if cal.fallback or cal.threshold is None or cal.coefficients is None:
            continue
        current = await aw(redis.hget(keys.calibration, cal.task))
        body: dict[str, Any] = json.loads(_s(current)) if current else {"thresholds": {}}
        body["thresholds"][cal.tier] = cal.threshold
        body["coefficients"] = cal.coefficients.as_dict()
        body["holdout_quality"] = cal.holdout_quality
        body["holdout_escalated"] = cal.holdout_escalated
        body["labels"] = cal.labels
        body["at"] = time.time()
        await aw(redis.hset(keys.calibration, cal.task, json.dumps(body)))
        stored += 1
    return stored


async def load_calibrated(
    redis: Redis, keys: Keys
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Coefficients]], dict[str, Any]]:
    """(task -> tier -> threshold, task -> {family: coefficients}, task -> stored body)."""
    raw: dict[Any, Any] = await aw(redis.hgetall(keys.calibration))
    thresholds: dict[str, dict[str, float]] = {}
    coefs: dict[str, dict[str, Coefficients]] = {}
    bodies: dict[str, Any] = {}
    for k, v in raw.items():
        task = _s(k)
        try:
            body = json.loads(_s(v))
            thresholds[task] = {str(t): float(x) for t, x in body.get("thresholds", {}).items()}
            family = family_of(task)
            if family and body.get("coefficients"):
                coefs[task] = {family: Coefficients.from_dict(body["coefficients"])}
            bodies[task] = body
        except (ValueError, TypeError, AttributeError):
            log.warning("calibration of task %s in Redis is damaged; ignoring it", task)
    return thresholds, coefs, bodies


async def refresh_forever(redis: Redis, keys: Keys, target: Any, every: float = REFRESH_S) -> None:
    """Keep ``target.cascade_thresholds`` and ``target.check_coefficients`` in step with Redis."""
    while True:
        try:
            thresholds, coefs, _ = await load_calibrated(redis, keys)
            target.cascade_thresholds = thresholds
            target.check_coefficients = coefs
        except Exception as e:  # a Redis hiccup keeps the last known calibration
            log.debug("calibration refresh failed: %s", e)
        await asyncio.sleep(every)


async def quality_by_task(redis: Redis, keys: Keys, target: float, min_labels: int) -> dict[str, Any]:
    """Per task: labels collected, kept-answer quality measured on held-out labels vs the target, the
    escalation rate there, and whether the shipped defaults are in use (too few labels)."""
    groups = await load_labels(redis, keys)
    _, _, bodies = await load_calibrated(redis, keys)
    out: dict[str, Any] = {}
    for task in sorted({t for t, _ in groups} | set(bodies)):
        n = sum(len(v) for (t, _), v in groups.items() if t == task)
        agree = sum(x.agree for (t, _), v in groups.items() if t == task for x in v)
        body = bodies.get(task)
        out[task] = {
            "labels": n,
            "cheap_agreement": round(agree / n, 4) if n else None,
            "target": target,
            "kept_quality_held_out": body.get("holdout_quality") if body else None,
            "escalation_rate_held_out": body.get("holdout_escalated") if body else None,
            "thresholds": body.get("thresholds") if body else None,
            "defaults": body is None,
            "note": "calibrated" if body else f"shipped defaults (calibrate needs >= {min_labels} labels)",
        }
    return out
