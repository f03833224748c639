"""How good is a router? RouteLLM's scoring (APGR, CPT), cost saved, three-tier calibration, CV.

Pure functions over plain lists (no numpy), so the CLI can evaluate without the training extra.

Scoring follows RouteLLM (arXiv 2406.18665, section 3.2): a prompt whose score is at or above a threshold
goes to the strong model; thresholds sweep the deciles of the scores (0%, 10%, ..., 100%). Each threshold
gives a point (strong share, quality). PGR = (quality - weak) / (strong - weak); APGR is the trapezoid
area under PGR against the strong share, with the "all weak" point (0, 0) added so the curve spans [0, 1].
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Always-opus vs always-haiku input price per MTok in the shipped catalog (claude-opus-4-5 $5 vs
# claude-haiku-4-5 $1). Stated rather than read at import so evaluation stays pure.
DEFAULT_PRICE_RATIO = 5.0
# Tier input prices relative to haiku (catalog: haiku 1, sonnet 3, opus 5 USD/MTok).
DEFAULT_TIER_PRICES = (1.0, 3.0, 5.0)
# Share of the strong-over-weak gain the middle tier is assumed to recover (the data has two models).
DEFAULT_SONNET_GAIN = 0.5


@dataclass(frozen=True, slots=True)
class CurvePoint:
    threshold: float
    strong_share: float
    quality: float
    pgr: float


@dataclass(frozen=True, slots=True)
class Metrics:
    apgr: float
    cpt50: float
    cpt80: float
    cost_saved_at_95: float
    weak_quality: float
    strong_quality: float

    def as_dict(self) -> dict[str, float]:
        return {
            "apgr": self.apgr,
            "cpt50": self.cpt50,
            "cpt80": self.cpt80,
            "cost_saved_at_95": self.cost_saved_at_95,
            "weak_quality": self.weak_quality,
            "strong_quality": self.strong_quality,
        }


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), q in [0, 1]."""
    if not values:
        raise ValueError("quantile of no values")
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _mean(xs: Sequence[bool] | Sequence[float]) -> float:
    return sum(float(x) for x in xs) / len(xs) if xs else 0.0


def routing_curve(
    scores: Sequence[float],
    weak_correct: Sequence[bool],
    strong_correct: Sequence[bool],
    points: int = 10,
) -> list[CurvePoint]:
    """Curve points sorted by strong share, from (0, weak) to (1, strong)."""
    n = len(scores)
    if n == 0 or len(weak_correct) != n or len(strong_correct) != n:
        raise ValueError("scores and labels must be non-empty and of equal length")
    wq, sq = _mean(weak_correct), _mean(strong_correct)
    gap = sq - wq

    def point(threshold: float) -> CurvePoint:
        strong = [s >= threshold for s in scores]
        share = sum(strong) / n
        quality = (
            sum(sc if up else wc for up, wc, sc in zip(strong, weak_correct, strong_correct, strict=True)) / n
        )
        pgr = (quality - wq) / gap if gap else 0.0
        return CurvePoint(threshold, share, quality, pgr)

    cuts = [quantile(scores, i / points) for i in range(points + 1)]
    curve = [CurvePoint(math.inf, 0.0, wq, 0.0)] + [point(t) for t in cuts]
    # Ties can put several thresholds on one share; keep one point per share (they have equal quality).
    unique: dict[float, CurvePoint] = {}
    for p in curve:
        unique.setdefault(p.strong_share, p)
    return sorted(unique.values(), key=lambda p: p.strong_share)


def apgr(curve: Sequence[CurvePoint]) -> float:
    """Average PGR: trapezoid area under PGR against strong share."""
    area = 0.0
    for a, b in itertools.pairwise(curve):
        area += (b.strong_share - a.strong_share) * (a.pgr + b.pgr) / 2
    return area


def _first_share(curve: Sequence[CurvePoint], value: Callable[[CurvePoint], float], target: float) -> float:
    """Smallest strong share at which ``value`` reaches ``target``, interpolating linearly on the curve."""
    prev: CurvePoint | None = None
    for p in curve:
        v = value(p)
        if v >= target:
            if prev is None:
                return p.strong_share
            pv = value(prev)
            frac = (target - pv) / (v - pv) if v != pv else 1.0
            return prev.strong_share + frac * (p.strong_share - prev.strong_share)
        prev = p
    return 1.0


def cpt(curve: Sequence[CurvePoint], x: float) -> float:
    """Call-performance threshold: the strong share needed to reach PGR ``x`` (e.g. 0.5 for CPT(50%))."""
    return _first_share(curve, lambda p: p.pgr, x)


def relative_cost(strong_share: float, price_ratio: float = DEFAULT_PRICE_RATIO) -> float:
    """Cost of a routed mix as a fraction of always-strong, with weak priced 1 and strong ``price_ratio``."""
    return (strong_share * price_ratio + (1 - strong_share)) / price_ratio


def cost_saved(
    curve: Sequence[CurvePoint], target: float = 0.95, price_ratio: float = DEFAULT_PRICE_RATIO
) -> float:
    """Fraction of the always-strong cost saved at the cheapest point with quality >= target x strong's."""
    strong_q = curve[-1].quality
    share = _first_share(curve, lambda p: p.quality, target * strong_q)
    return 1 - relative_cost(share, price_ratio)


def metrics(
    scores: Sequence[float],
    weak_correct: Sequence[bool],
    strong_correct: Sequence[bool],
    price_ratio: float = DEFAULT_PRICE_RATIO,
) -> Metrics:
    curve = routing_curve(scores, weak_correct, strong_correct)
    return Metrics(
        apgr=apgr(curve),
        cpt50=cpt(curve, 0.5),
        cpt80=cpt(curve, 0.8),
        cost_saved_at_95=cost_saved(curve, 0.95, price_ratio),
        weak_quality=curve[0].quality,
        strong_quality=curve[-1].quality,
    )


# --- baselines --------------------------------------------------------------------------------------
def length_scores(prompts: Sequence[str]) -> list[float]:
    """Prompt-length baseline: longer prompts go up first."""
    return [float(len(p)) for p in prompts]


def random_scores(n: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]


# --- cross-validation -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Row:
    domain: str
    prompt: str
    weak_correct: bool
    strong_correct: bool


# A method trains on some rows and returns a scoring function for others.
Method = Callable[[Sequence[Row]], Callable[[Sequence[str]], list[float]]]


def cross_validate(rows: Sequence[Row], method: Method, folds: int | None = None) -> list[float]:
    """Leave-domain-out: each domain is scored by a model trained on the others. Returns out-of-fold
    scores aligned with ``rows``. ``folds`` groups domains into that many folds (round-robin over the
    sorted domain names) to trade fidelity for speed; None = one fold per domain."""
    domains = sorted({r.domain for r in rows})
    if len(domains) < 2:
        raise ValueError("leave-domain-out needs at least two domains")
    k = len(domains) if folds is None else max(2, min(folds, len(domains)))
    fold_of = {d: i % k for i, d in enumerate(domains)}
    out = [0.0] * len(rows)
    for f in range(k):
        train = [r for r in rows if fold_of[r.domain] != f]
        test_idx = [i for i, r in enumerate(rows) if fold_of[r.domain] == f]
        score = method(train)
        for i, s in zip(test_idx, score([rows[i].prompt for i in test_idx]), strict=True):
            out[i] = s
    return out


def compare(
    rows: Sequence[Row],
    learned: Sequence[float],
    price_ratio: float = DEFAULT_PRICE_RATIO,
    seed: int = 0,
) -> dict[str, Metrics]:
    """The learned router, prompt length and random, scored on the same rows in one run."""
    weak = [r.weak_correct for r in rows]
    strong = [r.strong_correct for r in rows]
    return {
        "learned": metrics(learned, weak, strong, price_ratio),
        "prompt_length": metrics(length_scores([r.prompt for r in rows]), weak, strong, price_ratio),
        "random": metrics(random_scores(len(rows), seed), weak, strong, price_ratio),
    }


# --- three tiers ------------------------------------------------------------------------------------
def calibrate(
    scores: Sequence[float],
    weak_correct: Sequence[bool],
    strong_correct: Sequence[bool],
    *,
    target_quality: float | None = 0.95,
    target_top_share: float | None = None,
    sonnet_gain: float = DEFAULT_SONNET_GAIN,
    tier_prices: tuple[float, float, float] = DEFAULT_TIER_PRICES,
    grid: int = 100,
) -> tuple[float, float]:
    """Two thresholds: score < threshold_sonnet -> haiku, < threshold_opus -> sonnet, else opus.

    The data holds two models only (weak ~ haiku, strong ~ opus). The middle tier is modelled as
    recovering ``sonnet_gain`` (default half) of the strong-over-weak gain on each prompt it takes:
    expected quality = mean(weak on haiku band, weak + g*(strong - weak) on sonnet band, strong on opus
    band). Sonnet sits between the two in capability and in price, and this keeps the rule honest
    about what the data can say: with g=0 sonnet buys nothing and the rule degenerates to two tiers.

    - ``target_quality`` (fraction of always-opus quality): the cheapest threshold pair (by
      ``tier_prices``) over a percentile grid whose expected quality reaches it.
    - ``target_top_share``: opus takes that top share of scores; sonnet's band is then the smallest one
      below it that reaches ``target_quality`` (or everything below, if it cannot be reached; none if
      ``target_quality`` is None).
    """
    n = len(scores)
    if n == 0 or len(weak_correct) != n or len(strong_correct) != n:
        raise ValueError("scores and labels must be non-empty and of equal length")
    if target_quality is None and target_top_share is None:
        raise ValueError("give target_quality or target_top_share")
    order = sorted(range(n), key=lambda i: scores[i], reverse=True)
    # gain_prefix[k] = total strong-minus-weak gain of the k highest-scored prompts.
    gain_prefix = [0.0]
    for i in order:
        gain_prefix.append(gain_prefix[-1] + float(strong_correct[i]) - float(weak_correct[i]))
    weak_total = float(sum(weak_correct))
    goal = None if target_quality is None else target_quality * sum(strong_correct)
    p_h, p_s, p_o = tier_prices

    def quality(n_opus: int, n_up: int) -> float:
        """Expected correct count when the top n_opus go to opus and the next n_up - n_opus to sonnet."""
        return weak_total + gain_prefix[n_opus] + sonnet_gain * (gain_prefix[n_up] - gain_prefix[n_opus])

    def cost(n_opus: int, n_up: int) -> float:
        return p_o * n_opus + p_s * (n_up - n_opus) + p_h * (n - n_up)

    counts = sorted({round(n * k / grid) for k in range(grid + 1)})

    def threshold_for(count: int) -> float:
        """Score threshold sending exactly the top ``count`` prompts up (ties go up together)."""
        if count <= 0:
            return math.inf
        return scores[order[count - 1]]

    if target_top_share is not None:
        n_opus = round(n * min(max(target_top_share, 0.0), 1.0))
        n_up = n_opus
        if goal is not None:
            n_up = next((c for c in counts if c >= n_opus and quality(n_opus, c) >= goal), n)
        return threshold_for(n_up), threshold_for(n_opus)

    assert goal is not None
    best: tuple[float, int, int] | None = None
    for n_opus in counts:
        for n_up in counts:
            if n_up < n_opus or quality(n_opus, n_up) < goal:
                continue
            c = cost(n_opus, n_up)
            if best is None or c < best[0]:
                best = (c, n_opus, n_up)
            break  # larger n_up only costs more for this n_opus
    _, n_opus, n_up = best if best is not None else (0.0, n, n)
    return threshold_for(n_up), threshold_for(n_opus)
