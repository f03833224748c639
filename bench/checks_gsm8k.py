"""Answer checks as a cascade on GSM8K: held-out APGR, CPT and cost saved; prints one JSON object.

Usage: python bench/checks_gsm8k.py [--data CSV] [--folds 10] [--seeds 5] [--write-coefficients]

Each weak (cheap) answer is scored by the maths checks; answers at or above a threshold are escalated to
the strong model (RouteLLM's sweep, worker/routerlab/evaluate.py). Held-out figures come from k-fold by
problem: the logistic weights are fitted on k-1 folds and score the held-out fold; the pooled
out-of-fold scores are evaluated, repeated over several fold assignments. The main figures use
format-neutral answers: calculator annotations dropped and the few-shot ``#### N`` line rewritten as
"The answer is N.", so nothing rests on the weak model's imitated format. The shipped coefficients
(fitted on all the dev data) are reported in-sample, for deployment only. Baselines (prompt length,
random) are scored on the same rows in the same run. In a cascade the cheap call is always paid:
cost = price_ratio + escalated share, against 1 for always-strong.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jobs.settings import Settings  # noqa: E402
from jobs.tiers import Tier  # noqa: E402
from worker.policy.answer_checks import maths, score_answer  # noqa: E402
from worker.policy.answer_checks.fit import fit_logistic  # noqa: E402
from worker.policy.answer_checks.score import Signals, combine, shipped_coefficients  # noqa: E402
from worker.routerlab import evaluate as router_eval  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "gsm8k-cascade-dev" / "gsm8k_dev.csv"
COEFS = ROOT / "worker" / "policy" / "answer_checks" / "data" / "coefficients.json"
PRICE_RATIO = 0.2  # cheap / strong
SHIPPED_THRESHOLD = Settings(_env_file=None).cascade_thresholds[Tier.haiku]  # type: ignore[call-arg]


def neutral(text: str) -> str:
    text = re.sub(r"<<[^<>]*>>", "", text)
    return re.sub(r"####\s*(\S+)", r"The answer is \1.", text)


def cascade_saved(curve: list[router_eval.CurvePoint], target: float = 0.95) -> dict[str, float]:
    goal = target * curve[-1].quality
    share = router_eval._first_share(curve, lambda p: p.quality, goal)
    return {"escalated_share": round(share, 4), "cost_saved": round(1 - (PRICE_RATIO + share), 4)}


def evaluate(scores: list[float], weak: list[bool], strong: list[bool]) -> dict[str, float]:
    curve = router_eval.routing_curve(scores, weak, strong)
    return {
        "apgr": round(router_eval.apgr(curve), 4),
        "cpt50": round(router_eval.cpt(curve, 0.5), 4),
        "cpt80": round(router_eval.cpt(curve, 0.8), 4),
        **{f"at95_{k}": v for k, v in cascade_saved(curve).items()},
    }


def out_of_fold(feats: list[Signals], fails: list[bool], folds: int, seed: int) -> list[float]:
    idx = list(range(len(feats)))
    random.Random(seed).shuffle(idx)
    out = [0.0] * len(feats)
    for f in range(folds):
        test = set(idx[f::folds])
        train = [i for i in idx if i not in test]
        c = fit_logistic([feats[i] for i in train], [fails[i] for i in train], maths.SIGNALS)
        for i in test:
            out[i] = combine(feats[i], c)
    return out


def at_threshold(scores: list[float], weak: list[bool], strong: list[bool], t: float) -> dict[str, float]:
    """The cascade at a fixed threshold: share escalated and kept quality as a share of strong's."""
    up = [x >= t for x in scores]
    kept = sum(s if u else w for u, w, s in zip(up, weak, strong, strict=True))
    return {"escalated_share": sum(up) / len(up), "quality_ratio": kept / sum(strong)}


def held_out(feats: list[Signals], weak: list[bool], strong: list[bool], a: Any) -> dict[str, Any]:
    runs, fixed = [], []
    for seed in range(a.seeds):
        scores = out_of_fold(feats, [not w for w in weak], a.folds, seed)
        runs.append(evaluate(scores, weak, strong))
        fixed.append(at_threshold(scores, weak, strong, SHIPPED_THRESHOLD))
    mean = {k: round(statistics.mean(r[k] for r in runs), 4) for k in runs[0]}
    at_shipped = {k: round(statistics.mean(f[k] for f in fixed), 4) for k in fixed[0]}
    return {
        **mean,
        "apgr_per_seed": [r["apgr"] for r in runs],
        "apgr_min": min(r["apgr"] for r in runs),
        f"at_shipped_threshold_{SHIPPED_THRESHOLD}": at_shipped,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--write-coefficients", action="store_true")
    a = ap.parse_args()
    with open(a.data, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    weak = [r["weak_correct"] == "True" for r in rows]
    strong = [r["strong_correct"] == "True" for r in rows]
    answers = {
        "neutral": [neutral(r["weak_response"]) for r in rows],
        "raw": [r["weak_response"] for r in rows],
    }
    t0 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        for r, ans in zip(rows, answers["neutral"], strict=True):
            score_answer("reason", r["prompt"], ans)
    rate = reps * len(rows) / (time.perf_counter() - t0)
    feats = {
        k: [maths.signals(r["prompt"], t)[0] for r, t in zip(rows, v, strict=True)]
        for k, v in answers.items()
    }
    fitted = fit_logistic(feats["neutral"], [not w for w in weak], maths.SIGNALS)
    if a.write_coefficients:
        data = json.loads(COEFS.read_text()) if COEFS.exists() else {"families": {}}
        data["families"]["maths"] = {
            **fitted.as_dict(),
            "fitted_on": "gsm8k-cascade-dev, 634 weak answers, format-neutral (bench/checks_gsm8k.py)",
        }
        COEFS.write_text(json.dumps(data, indent=2) + "\n")
        shipped_coefficients.cache_clear()
    shipped = [
        score_answer("reason", r["prompt"], t).score for r, t in zip(rows, answers["neutral"], strict=True)
    ]
    prompts = [r["prompt"] for r in rows]
    report = {
        "problems": len(rows),
        "weak_quality": round(statistics.mean(weak), 4),
        "strong_quality": round(statistics.mean(strong), 4),
        "price_ratio": PRICE_RATIO,
        "answers_per_s": round(rate, 1),
        "held_out_neutral": held_out(feats["neutral"], weak, strong, a),
        "held_out_raw_format": held_out(feats["raw"], weak, strong, a),
        "shipped_in_sample": evaluate(shipped, weak, strong),
        "prompt_length": evaluate(router_eval.length_scores(prompts), weak, strong),
        "random": evaluate(router_eval.random_scores(len(rows), 0), weak, strong),
        "folds": a.folds,
        "seeds": a.seeds,
    }
    report["apgr_ratio_vs_prompt_length"] = round(
        report["held_out_neutral"]["apgr"] / report["prompt_length"]["apgr"], 3
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
