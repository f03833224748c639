"""Scoring throughput of the shipped router on one core; prints one JSON object.

Usage: python bench/router_speed.py [--data CSV] [--n 5000]. Without --data it scores synthetic
MMLU-shaped prompts (~500 characters, the MMLU mean).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

from worker.policy.scorer import Scorer


def synthetic(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = [
        "the",
        "court",
        "held",
        "that",
        "a",
        "statute",
        "may",
        "apply",
        "if",
        "12",
        "units",
        "of",
        "x",
        "=",
        "3y",
        "+",
        "4",
        "are",
        "given",
        "not",
        "which",
    ]
    out = []
    for _ in range(n):
        stem = " ".join(rng.choice(words) for _ in range(rng.randint(20, 140)))
        opts = "\n".join(f"{c}. " + " ".join(rng.choice(words) for _ in range(4)) for c in "ABCD")
        out.append(f"{stem}?\n{opts}\nAnswer:")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    if args.data:
        with open(args.data, newline="", encoding="utf-8") as f:
            prompts = [r["prompt"] for r in csv.DictReader(f)][: args.n]
    else:
        prompts = synthetic(args.n)
    t0 = time.perf_counter()
    scorer = Scorer.load()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = scorer.score_many(prompts)
    elapsed = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "prompts": len(prompts),
                "mean_chars": round(sum(map(len, prompts)) / len(prompts), 1),
                "seconds": round(elapsed, 4),
                "prompts_per_s": round(len(prompts) / elapsed, 1),
                "load_s": round(load_s, 4),
                "mean_score": round(sum(scores) / len(scores), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
