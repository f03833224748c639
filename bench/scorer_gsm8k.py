"""The shipped prompt scorer on GSM8K dev prompts it never trained on: APGR vs prompt length and random,
and its speed; prints one JSON object.

Usage: python bench/scorer_gsm8k.py [--data CSV]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from worker.policy.scorer import Scorer  # noqa: E402
from worker.routerlab import evaluate  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "gsm8k-cascade-dev" / "gsm8k_dev.csv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    a = ap.parse_args()
    with open(a.data, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    prompts = [r["prompt"] for r in rows]
    weak = [r["weak_correct"] == "True" for r in rows]
    strong = [r["strong_correct"] == "True" for r in rows]
    scorer = Scorer.load()
    t0 = time.perf_counter()
    scores = scorer.score_many(prompts)
    rate = len(prompts) / (time.perf_counter() - t0)
    got = evaluate.compare(
        [evaluate.Row("gsm8k", p, w, s) for p, w, s in zip(prompts, weak, strong, strict=True)], scores, 5.0
    )
    out = {k: {m: round(v, 4) for m, v in x.as_dict().items()} for k, x in got.items()}
    print(
        json.dumps(
            {
                "prompts": len(prompts),
                "prompts_per_s": round(rate, 1),
                **out,
                "apgr_ratio_vs_prompt_length": round(
                    out["learned"]["apgr"] / out["prompt_length"]["apgr"], 3
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
