"""GSM8K problems as cascade jobs through real workers, the stand-in replaying recorded answers.

Usage: python bench/cascade_e2e.py [--data CSV] [--n 634] [--workers 2]; prints one JSON object.

Haiku answers with the weak model's recorded answer, sonnet and opus with the strong model's (the replay
file also records which answers were right, so shadow grading requests get verdicts). Every job
runs the ``cascade`` strategy at the default thresholds. A kept answer is correct when the recorded
answer of the model behind it was (weak for haiku, strong above). The anchor, in the same run, is
all-top-tier quality: the strong answers' accuracy on the same problems.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
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
from jobs.connections import connect  # noqa: E402
from jobs.contract import Job  # noqa: E402
from jobs.producer import Producer  # noqa: E402
from jobs.reports import batch_report  # noqa: E402
from jobs.results import JobResult  # noqa: E402
from jobs.tiers import Tier  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "gsm8k-cascade-dev" / "gsm8k_dev.csv"


def load_rows(path: Path, n: int | None = None) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows[:n] if n else rows


def write_replay(rows: Sequence[dict[str, str]], path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            answers = {
                "haiku": r["weak_response"],
                "sonnet": r["strong_response"],
                "opus": r["strong_response"],
            }
            weak, strong = r["weak_correct"] == "True", r["strong_correct"] == "True"
            correct = {"haiku": weak, "sonnet": strong, "opus": strong}
            f.write(json.dumps({"prompt": r["prompt"], "answers": answers, "correct": correct}) + "\n")
    return path


def jobs_for(rows: Sequence[dict[str, str]]) -> list[Job]:
    return [
        Job(id=f"gsm{i}", task="reason", prompt=r["prompt"], constraints={"strategy": "cascade"})
        for i, r in enumerate(rows)
    ]


def outcome(rows: Sequence[dict[str, str]], results: Sequence[JobResult]) -> dict[str, Any]:
    """Kept-answer accuracy vs all-top-tier accuracy, and the share of jobs that left haiku."""
    kept = top = left = 0
    why: Counter[str] = Counter()
    for r, res in zip(rows, results, strict=True):
        on_haiku = res.tier == Tier.haiku
        kept += (r["weak_correct"] if on_haiku else r["strong_correct"]) == "True"
        top += r["strong_correct"] == "True"
        if not on_haiku:
            left += 1
            first = res.attempts[0]
            why[first.check_signal or first.error_type or "unknown"] += 1
    n = len(rows)
    return {
        "jobs": n,
        "kept_accuracy": round(kept / n, 4),
        "all_top_accuracy": round(top / n, 4),
        "all_haiku_accuracy": round(sum(r["weak_correct"] == "True" for r in rows) / n, 4),
        "quality_ratio": round(kept / top, 4) if top else 0.0,
        "left_haiku_share": round(left / n, 4),
        "escalated_why": dict(why.most_common()),
    }


async def run(a: argparse.Namespace) -> dict[str, Any]:
    rows = load_rows(a.data, a.n)
    with Procs() as procs, tempfile.TemporaryDirectory() as tmp:
        redis_srv = procs.redis()
        api = procs.api("--replay", str(write_replay(rows, Path(tmp) / "replay.jsonl")))
        s = settings_for(redis_srv.url)
        redis = await connect(s)
        procs.workers(a.workers, worker_env(redis_srv.url, api))
        await wait_workers(redis, s, a.workers)
        t0 = time.monotonic()
        res = await Producer(redis, s).enqueue(jobs_for(rows), batch="gsm8k-cascade")
        st = await wait_batch(redis, s, "gsm8k-cascade", len(rows), timeout=a.timeout)
        results = [JobResult.model_validate_json(await redis.get(s.keys.result(j))) for j in res.job_ids]
        rep = await batch_report(redis, s.keys, "gsm8k-cascade")
        await redis.aclose()
    out = outcome(rows, results)
    out.update(
        {
            "complete": st["complete"],
            "failed": st["failed"],
            "seconds": round(time.monotonic() - t0, 2),
            "report_escalated": rep["escalated"],
            "cost_usd": rep["cost_usd"],
            "all_opus_baseline_usd": rep["baseline_cost_usd"],
            "targets_met": out["quality_ratio"] >= 0.95 and out["left_haiku_share"] <= 0.55,
        }
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600.0)
    print(json.dumps(asyncio.run(run(ap.parse_args()))))


if __name__ == "__main__":
    main()
