"""Calibration from replayed shadow traffic, measured on held-out traffic; prints one JSON object.

Usage: python bench/calibration_replay.py [--data CSV] [--n 634] [--splits 5] [--workers 2]

1. Labelling: every GSM8K dev problem runs as a ``cascade`` job through real workers at the shipped
   thresholds, the stand-in replaying the recorded answers (haiku = weak model, sonnet/opus = strong)
   and their recorded correctness, with ``ROUTEQ_SHADOW_RATE=1``: each job's first (haiku) answer is
   compared with opus's, by final numbers or by a grading call the stand-in answers from the record.
2. Per split N (``--splits``): ``routeq check calibrate --task reason --split-seed N`` fits weights and
   the threshold on its ~70% of the labels and stores them; the workers (shadow sampling off now) pick
   them up; the ~30% held-out problems run again as new cascade jobs.
3. On that held-out traffic: kept answers' agreement with opus's answer (the issue's quality: 1 when
   the kept answer came from opus, else the shadow check's own verdict), against the target; the
   ground-truth accuracy of kept answers; escalation (jobs that left haiku); cost vs all-opus.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import Procs, settings_for, wait_batch, wait_workers, worker_env  # noqa: E402
from bench.cascade_e2e import DATA, load_rows, write_replay  # noqa: E402
from jobs.connections import connect  # noqa: E402
from jobs.contract import Job, TaskType  # noqa: E402
from jobs.producer import Producer  # noqa: E402
from jobs.reports import batch_report  # noqa: E402
from jobs.results import JobResult  # noqa: E402
from jobs.settings import Settings  # noqa: E402
from jobs.tiers import TOP_TIER, Tier  # noqa: E402
from worker.fleet import calibration, quality  # noqa: E402
from worker.policy.calibration import is_held_out  # noqa: E402
from worker.policy.grading import GradingRequest, compare, parse_grade  # noqa: E402
from worker.sandbox.mock_api.replay import ReplayBook, load_replay  # noqa: E402


def cascade_jobs(rows: Sequence[dict[str, str]], prefix: str, idx: Sequence[int]) -> list[Job]:
    return [
        Job(id=f"{prefix}{i}", task="reason", prompt=rows[i]["prompt"], constraints={"strategy": "cascade"})
        for i in idx
    ]


def agrees_with_top(book: ReplayBook, prompt: str, res: JobResult) -> bool:
    """Does the kept answer agree with the top tier's, judged as a shadow check judges it?"""
    if res.tier == TOP_TIER:
        return True
    top = book.lookup(prompt, TOP_TIER.value)
    kept = res.output or ""
    if top is None:
        return False
    verdict = compare(TaskType.reason, kept, top)
    if verdict is None:
        graded = book.verdict(GradingRequest("reason", prompt, top, kept))
        verdict = graded is not None and parse_grade(graded)
    return verdict


def kept_correct(book: ReplayBook, prompt: str, res: JobResult) -> bool:
    entry = book.recorded(prompt)
    return bool(entry is not None and entry.is_correct(res.output or ""))


async def wait_labels(redis: Any, s: Settings, want: int, timeout: float) -> int:
    """Wait until ``want`` shadow comparisons are counted, or the count stops growing for 20 s."""
    t0 = last_change = time.monotonic()
    seen = -1
    while time.monotonic() - t0 < timeout:
        got = int((await quality.quality_report(redis, s.keys))["overall"]["total"])
        if got >= want:
            return got
        if got != seen:
            seen, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > 20:
            return got
        await asyncio.sleep(0.25)
    return seen


def cli(redis_url: str, target: float, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEQ_")}
    env.update({"REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), "ROUTEQ_QUALITY_TARGET": str(target)})
    p = subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    if p.returncode != 0:
        raise RuntimeError(f"routeq {' '.join(args)} failed: {p.stderr.strip()}")
    got: dict[str, Any] = json.loads(p.stdout)
    return got


async def label_phase(
    redis: Any, s: Settings, procs: Procs, env: dict[str, str], rows: Sequence[dict[str, str]], a: Any
) -> tuple[list[str], dict[str, Any]]:
    shadow = {"ROUTEQ_SHADOW_RATE": "1.0", "ROUTEQ_SHADOW_POLL_S": "0.05", "ROUTEQ_SHADOW_BUDGET_USD": "1000"}
    workers = procs.workers(a.workers, {**env, **shadow})
    await wait_workers(redis, s, a.workers)
    t0 = time.monotonic()
    res = await Producer(redis, s).enqueue(cascade_jobs(rows, "gsm", range(len(rows))), batch="label")
    st = await wait_batch(redis, s, "label", len(rows), timeout=a.timeout)
    results = [JobResult.model_validate_json(await redis.get(s.keys.result(j))) for j in res.job_ids]
    await wait_labels(redis, s, len(rows), a.timeout)
    procs.stop_children(workers)
    rep = await quality.quality_report(redis, s.keys)
    groups = await calibration.load_labels(redis, s.keys, "reason")
    labels = groups.get(("reason", "haiku"), [])
    raw = [json.loads(x) for x in await redis.lrange(s.keys.quality_labels, 0, -1)]
    how = Counter(str(x.get("how")) for x in raw)
    by_id = {j: r for j, r in zip(res.job_ids, rows, strict=True)}
    # A label is right when it says what the recorded correctness says: agree when both answers were
    # right, disagree when only one was (both wrong: either can be right, so not counted).
    truth = [
        (x.agree, by_id[x.key]["weak_correct"] == "True", by_id[x.key]["strong_correct"] == "True")
        for x in labels
        if x.key in by_id
    ]
    judged = [(agree, weak and strong) for agree, weak, strong in truth if weak or strong]
    batch = await batch_report(redis, s.keys, "label")
    info = {
        "jobs": len(rows),
        "complete": st["complete"],
        "seconds": round(time.monotonic() - t0, 1),
        "labels": len(raw),
        "haiku_labels": len(labels),
        "labels_agree_share": round(sum(x.agree for x in labels) / max(1, len(labels)), 4),
        "labels_decided_by": dict(how),
        "labels_matching_recorded_correctness": round(
            sum(a == b for a, b in judged) / max(1, len(judged)), 4
        ),
        "labels_matching_weak_correct": round(sum(a == w for a, w, _ in truth) / max(1, len(truth)), 4),
        "left_haiku_at_shipped_thresholds": round(
            sum(r.tier != Tier.haiku for r in results) / max(1, len(results)), 4
        ),
        "cost_usd": batch["cost_usd"],
        "shadow_spend_usd": rep["shadow_cost_usd"],
    }
    return res.job_ids, info


async def split_phase(
    redis: Any,
    s: Settings,
    redis_url: str,
    book: ReplayBook,
    rows: Sequence[dict[str, str]],
    label_ids: Sequence[str],
    seed: int,
    target: float,
    timeout: float,
) -> dict[str, Any]:
    out = cli(
        redis_url, target, "check", "calibrate", "--task", "reason", "--split-seed", str(seed), "--json"
    )
    cal = next(c for c in out["calibrations"] if c["tier"] == "haiku")
    if cal["fallback"]:
        return {"seed": seed, "fallback": cal["message"]}
    stored, _, _ = await calibration.load_calibrated(redis, s.keys)
    assert stored["reason"]["haiku"] == cal["threshold"]
    await asyncio.sleep(2 * calibration.REFRESH_S + 1.0)  # every running worker re-reads it
    held = [i for i, j in enumerate(label_ids) if is_held_out(j, seed=seed)]
    batch = f"held{seed}"
    res = await Producer(redis, s).enqueue(cascade_jobs(rows, f"s{seed}-", held), batch=batch)
    st = await wait_batch(redis, s, batch, len(held), timeout=timeout)
    results = [JobResult.model_validate_json(await redis.get(s.keys.result(j))) for j in res.job_ids]
    prompts = [rows[i]["prompt"] for i in held]
    agree = [agrees_with_top(book, p, r) for p, r in zip(prompts, results, strict=True)]
    correct = [kept_correct(book, p, r) for p, r in zip(prompts, results, strict=True)]
    rep = await batch_report(redis, s.keys, batch)
    q = sum(agree) / len(agree)
    return {
        "seed": seed,
        "complete": st["complete"],
        "threshold": cal["threshold"],
        "fit_labels": cal["labels"] - cal["holdout_labels"],
        "held_out_jobs": len(held),
        "quality": round(q, 4),
        "within_2_points": abs(q - target) <= 0.02,
        "not_below_by_2_points": q >= target - 0.02,
        "label_estimate": cal["holdout_quality"],
        "ground_truth_accuracy": round(sum(correct) / len(correct), 4),
        "all_top_accuracy": round(sum(rows[i]["strong_correct"] == "True" for i in held) / len(held), 4),
        "escalated": round(sum(r.tier != Tier.haiku for r in results) / len(results), 4),
        "cost_vs_all_opus": round(rep["cost_usd"] / rep["baseline_cost_usd"], 4),
    }


def summary(splits: list[dict[str, Any]], key: str) -> dict[str, float]:
    v = [float(x[key]) for x in splits if key in x]
    if not v:
        return {}
    return {"mean": round(statistics.mean(v), 4), "min": round(min(v), 4), "max": round(max(v), 4)}


async def run(a: argparse.Namespace) -> dict[str, Any]:
    rows = load_rows(a.data, a.n)
    with Procs() as procs, tempfile.TemporaryDirectory() as tmp:
        replay = write_replay(rows, Path(tmp) / "replay.jsonl")
        book = load_replay(replay)
        redis_srv = procs.redis()
        api = procs.api("--replay", str(replay))
        s = settings_for(redis_srv.url)
        redis = await connect(s)
        env = worker_env(redis_srv.url, api)
        label_ids, labelling = await label_phase(redis, s, procs, env, rows, a)
        procs.workers(a.workers, env)  # shadow sampling off: held-out traffic adds no labels
        await wait_workers(redis, s, a.workers)
        splits = [
            await split_phase(redis, s, redis_srv.url, book, rows, label_ids, seed, a.target, a.timeout)
            for seed in range(a.splits)
        ]
        await redis.aclose()
    fitted = [x for x in splits if "quality" in x]
    return {
        "target": a.target,
        "labelling": labelling,
        "quality": summary(fitted, "quality"),
        "all_within_2_points": bool(fitted) and all(x["within_2_points"] for x in fitted),
        "none_below_by_2_points": bool(fitted) and all(x["not_below_by_2_points"] for x in fitted),
        "label_estimate": summary(fitted, "label_estimate"),
        "ground_truth_accuracy": summary(fitted, "ground_truth_accuracy"),
        "all_top_accuracy": summary(fitted, "all_top_accuracy"),
        "escalated": summary(fitted, "escalated"),
        "cost_vs_all_opus": summary(fitted, "cost_vs_all_opus"),
        "splits": splits,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--target", type=float, default=0.95, help="the quality target calibrate aims at")
    ap.add_argument("--timeout", type=float, default=900.0)
    print(json.dumps(asyncio.run(run(ap.parse_args())), indent=2))


if __name__ == "__main__":
    main()
