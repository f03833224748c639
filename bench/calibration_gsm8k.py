"""Calibration on GSM8K shadow-style labels: held-out kept-answer quality vs the target; one JSON object.

Usage: python bench/calibration_gsm8k.py [--data CSV] [--splits 10] [--target 0.95]

Each dev problem becomes one shadow label: the weak answer's check signals, and whether its final
number agrees with the strong answer's (the top tier is the reference, as in routeq's shadow runs).
``worker.policy.calibration.calibrate`` fits weights and the cheapest threshold on ~70% of the labels
and measures on the other ~30%; the split is re-drawn ``--splits`` times (different label keys). The
anchor is the uncalibrated cascade at the shipped threshold on the same held-out labels.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jobs.settings import Settings  # noqa: E402
from jobs.tiers import Tier  # noqa: E402
from worker.policy.answer_checks import maths  # noqa: E402
from worker.policy.answer_checks.score import combine, shipped_coefficients  # noqa: E402
from worker.policy.calibration import Label, calibrate, is_held_out, quality_at  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "gsm8k-cascade-dev" / "gsm8k_dev.csv"


def agrees(weak: str, strong: str) -> bool:
    a, b = maths.final_answer(maths.clean(weak)), maths.final_answer(maths.clean(strong))
    if a is None or b is None:
        return False
    return abs(float(a.replace(",", "")) - float(b.replace(",", ""))) < 1e-6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.95)
    a = ap.parse_args()
    with open(a.data, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    sig = [maths.signals(r["prompt"], r["weak_response"])[0] for r in rows]
    agree = [agrees(r["weak_response"], r["strong_response"]) for r in rows]
    shipped_t = Settings(_env_file=None).cascade_thresholds[Tier.haiku]  # type: ignore[call-arg]
    shipped = shipped_coefficients()["maths"]
    runs = []
    for split in range(a.splits):
        labels = [Label(f"{split}:{i}", s, g) for i, (s, g) in enumerate(zip(sig, agree, strict=True))]
        cal = calibrate("reason", "haiku", labels, maths.SIGNALS, a.target)
        held = [x for x in labels if is_held_out(x.key)]
        sq, ss = quality_at([combine(x.signals, shipped) for x in held], [x.agree for x in held], shipped_t)
        runs.append(
            {
                "threshold": cal.threshold,
                "held_out_quality": cal.holdout_quality,
                "held_out_escalated": cal.holdout_escalated,
                "shipped_held_out_quality": round(sq, 4),
                "shipped_held_out_escalated": round(ss, 4),
            }
        )
    q = [float(r["held_out_quality"] or 0) for r in runs]

    def mean(k: str) -> float:
        return round(statistics.mean(float(r[k] or 0) for r in runs), 4)

    print(
        json.dumps(
            {
                "labels": len(rows),
                "cheap_agreement": round(sum(agree) / len(agree), 4),
                "target": a.target,
                "held_out_quality_mean": mean("held_out_quality"),
                "held_out_quality_min": round(min(q), 4),
                "held_out_quality_max": round(max(q), 4),
                "max_abs_gap_to_target": round(max(abs(x - a.target) for x in q), 4),
                "held_out_escalated_mean": mean("held_out_escalated"),
                "shipped_threshold": shipped_t,
                "shipped_held_out_quality_mean": mean("shipped_held_out_quality"),
                "shipped_held_out_escalated_mean": mean("shipped_held_out_escalated"),
                "splits": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
