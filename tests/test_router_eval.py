"""Router evaluation maths on small hand-made data with known answers, plus a leave-domain-out check."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from worker.routerlab import evaluate
from worker.routerlab.evaluate import Row

# Four prompts; escalating prompt 0 gains 1 (weak wrong, strong right), prompt 1 gains 1, the rest 0.
WEAK = [False, False, True, True]
STRONG = [True, True, True, True]


def test_perfect_router_curve_and_apgr() -> None:
    scores = [0.9, 0.8, 0.2, 0.1]  # the two gainers first
    curve = evaluate.routing_curve(scores, WEAK, STRONG)
    assert curve[0].strong_share == 0 and curve[0].pgr == 0
    assert curve[-1].strong_share == 1 and curve[-1].pgr == pytest.approx(1)
    shares = [p.strong_share for p in curve]
    assert shares == sorted(shares) and len(set(shares)) == len(shares)
    # PGR rises 0 -> 1 over the first half, then stays at 1: area = 0.5 * 0.5 + 0.5 * 1 = 0.75.
    assert evaluate.apgr(curve) == pytest.approx(0.75)
    assert evaluate.cpt(curve, 0.5) == pytest.approx(0.25)
    assert evaluate.cpt(curve, 1.0) == pytest.approx(0.5)


def test_worst_router_apgr() -> None:
    curve = evaluate.routing_curve([0.1, 0.2, 0.8, 0.9], WEAK, STRONG)
    # PGR stays 0 until half, then rises to 1: area 0.25.
    assert evaluate.apgr(curve) == pytest.approx(0.25)
    assert evaluate.cpt(curve, 0.5) == pytest.approx(0.75)


def test_cpt_interpolates_between_points() -> None:
    curve = [
        evaluate.CurvePoint(math.inf, 0.0, 0.0, 0.0),
        evaluate.CurvePoint(0.5, 0.4, 0.0, 0.8),
        evaluate.CurvePoint(0, 1.0, 0, 1.0),
    ]
    assert evaluate.cpt(curve, 0.4) == pytest.approx(0.2)
    assert evaluate.cpt(curve, 0.9) == pytest.approx(0.7)


def test_cost_saved_at_quality_target() -> None:
    curve = evaluate.routing_curve([0.9, 0.8, 0.2, 0.1], WEAK, STRONG)
    # Quality 1.0 (= strong's) is reached at strong share 0.5 -> cost (0.5*5 + 0.5) / 5 = 0.6.
    assert evaluate.cost_saved(curve, 1.0, price_ratio=5.0) == pytest.approx(0.4)
    assert evaluate.relative_cost(0.0, 5.0) == pytest.approx(0.2)
    assert evaluate.relative_cost(1.0, 5.0) == pytest.approx(1.0)


def test_random_is_about_half_and_length_baseline_orders_by_length() -> None:
    n = 4000
    weak = [i % 3 == 0 for i in range(n)]
    strong = [True] * n
    m = evaluate.metrics(evaluate.random_scores(n, seed=1), weak, strong)
    assert 0.45 < m.apgr < 0.55
    assert evaluate.length_scores(["a", "abc"]) == [1.0, 3.0]


def test_quantile_matches_linear_interpolation() -> None:
    assert evaluate.quantile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    assert evaluate.quantile([5.0], 0.3) == 5.0


def test_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        evaluate.routing_curve([0.1], [True, False], [True, True])


def test_calibrate_two_tier_when_sonnet_gains_nothing() -> None:
    scores = [0.9, 0.8, 0.2, 0.1]
    ts, to = evaluate.calibrate(scores, WEAK, STRONG, target_quality=1.0, sonnet_gain=0.0)
    assert to == 0.8 and ts == to  # exactly the two gainers to opus, no sonnet band


def test_calibrate_prefers_cheap_sonnet_band() -> None:
    scores = [0.9, 0.8, 0.2, 0.1]
    # Sonnet fixes all a strong model fixes at price 2 (< opus 5): both gainers to sonnet, none to opus.
    ts, to = evaluate.calibrate(
        scores, WEAK, STRONG, target_quality=1.0, sonnet_gain=1.0, tier_prices=(1, 2, 5)
    )
    assert ts == 0.8 and to == math.inf


def test_calibrate_top_share() -> None:
    scores = [0.9, 0.8, 0.2, 0.1]
    ts, to = evaluate.calibrate(scores, WEAK, STRONG, target_quality=None, target_top_share=0.25)
    assert to == 0.9 and ts == 0.9
    # Quality target 1.0 needs prompt 1 too; with half the gain from sonnet it cannot get there -> all up.
    ts, to = evaluate.calibrate(scores, WEAK, STRONG, target_quality=1.0, target_top_share=0.25)
    assert to == 0.9 and ts == 0.1
    ts, to = evaluate.calibrate(scores, WEAK, STRONG, target_quality=0.875, target_top_share=0.25)
    assert to == 0.9 and ts == 0.8


def test_cross_validate_scores_each_domain_with_a_model_that_never_saw_it() -> None:
    rows = [Row(d, f"{d}-{i}", True, True) for d in ("a", "b", "c") for i in range(2)]
    seen: list[set[str]] = []

    def method(train: object) -> object:
        domains = {r.domain for r in train}  # type: ignore[attr-defined]
        seen.append(domains)
        return lambda prompts: [float(p.split("-")[0] in domains) for p in prompts]

    out = evaluate.cross_validate(rows, method)  # type: ignore[arg-type]
    assert out == [0.0] * 6  # every prompt was scored by a model not trained on its domain
    assert sorted(map(sorted, seen)) == [["a", "b"], ["a", "c"], ["b", "c"]]


def test_leave_domain_out_learned_router_beats_random(shared_data: Path) -> None:
    pytest.importorskip("numpy")
    from worker.routerlab import train

    t0 = time.monotonic()
    rows = train.read_rows(shared_data / "mmlu_train.csv")
    # A deterministic subset: every third prompt, 6 grouped folds, keeps this well under 20 s.
    subset = rows[::3]
    scores = evaluate.cross_validate(subset, train.method(train.TrainConfig()), folds=6)
    res = evaluate.compare(subset, scores)
    assert res["learned"].apgr > res["random"].apgr + 0.07
    assert res["learned"].apgr > 0.57
    assert time.monotonic() - t0 < 20
