"""Train the learned router (``routeq router train``). Needs numpy: ``pip install 'routeq[train]'``.

Model: see :func:`fit`. Closed-form (ridge), no randomness: the same data gives the same file.

Compared under leave-domain-out CV on the RouteLLM MMLU data (pooled out-of-fold APGR; length 0.606):
logistic regression on all hand features 0.52-0.55 (label weak_wrong / strong_wins); bag of words
0.35-0.37 (below random: words mark the subject, and the held-out subject's rate is not the others');
within-domain ridge alone 0.57; within-domain ridge + length prior 0.617 (shipped).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from worker.policy.scorer import DENSE_FEATURES, MODEL_FORMAT, Z_CLIP, Scorer, dense_features
from worker.routerlab import evaluate
from worker.routerlab.evaluate import Row

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]


Label = Literal["weak_wrong", "strong_wins", "gain"]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    label: Label = "strong_wins"
    # Ridge penalty of the within-domain regression (features are standardised).
    ridge: float = 10.0
    # Weight of the prompt-length prior, in the same (probability) units as the fitted weights.
    length_prior: float = 0.3
    # Hand features to use (None = all of DENSE_FEATURES); the others get weight 0.
    dense_subset: tuple[str, ...] | None = None


def _np() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - depends on the environment
        raise SystemExit(
            "training the router needs numpy: pip install 'routeq[train]' (scoring does not)"
        ) from None
    return numpy


def read_rows(csv_path: Path) -> list[Row]:
    """Rows of a training CSV with columns domain, prompt, weak_correct, strong_correct."""

    def truth(v: str, line: int, col: str) -> bool:
        s = v.strip().lower()
        if s in ("true", "1", "yes"):
            return True
        if s in ("false", "0", "no"):
            return False
        raise ValueError(f"{csv_path}:{line}: column {col} is {v!r}, expected True/False")

    rows: list[Row] = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"domain", "prompt", "weak_correct", "strong_correct"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path}: missing columns {sorted(missing)}")
        for line, r in enumerate(reader, start=2):
            rows.append(
                Row(
                    domain=r["domain"],
                    prompt=r["prompt"],
                    weak_correct=truth(r["weak_correct"], line, "weak_correct"),
                    strong_correct=truth(r["strong_correct"], line, "strong_correct"),
                )
            )
    if not rows:
        raise ValueError(f"{csv_path}: no rows")
    return rows


class FeatureCache:
    """Memoised features per prompt: CV trains the same prompts ~40 times."""

    def __init__(self) -> None:
        self._dense: dict[str, list[float]] = {}

    def dense(self, prompt: str) -> list[float]:
        got = self._dense.get(prompt)
        if got is None:
            got = self._dense[prompt] = dense_features(prompt)
        return got


def label_of(row: Row, label: Label) -> float:
    """Training target in [0, 1]. ``gain`` is a soft label (strong - weak + 1) / 2: 1 when only the strong
    model is right, 0 when only the weak one is, 0.5 when they agree, so the fitted probability orders
    prompts by the expected quality gained by escalating them, which is what APGR rewards."""
    if label == "weak_wrong":
        return float(not row.weak_correct)
    if label == "strong_wins":
        return float(not row.weak_correct and row.strong_correct)
    return (float(row.strong_correct) - float(row.weak_correct) + 1) / 2


def fit(
    rows: Sequence[Row], config: TrainConfig = TrainConfig(), cache: FeatureCache | None = None
) -> dict[str, Any]:
    """Train on ``rows``; returns the model dict that :class:`worker.scorer.Scorer` reads.

    Within-domain ridge regression: labels and features are centred per domain before fitting, so the
    weights say what makes a prompt harder *than its neighbours*, not which subject was hard in the
    training set (subject cues made every learned variant worse than random on held-out domains).
    Across domains only the prompt-length prior orders prompts, with a fixed weight: it is the one
    cross-domain cue known to carry over (RouteLLM; and the length baseline under leave-domain-out).
    The linear score is mapped to a logit (x4: the logistic slope at 0.5) around the base rate, so the
    score reads roughly as the chance that escalating changes the answer from wrong to right.
    """
    np = _np()
    cache = cache or FeatureCache()
    y = np.array([label_of(r, config.label) for r in rows])
    dense = np.array([cache.dense(r.prompt) for r in rows])
    mean = dense.mean(axis=0)
    std = dense.std(axis=0)
    std[std < 1e-9] = 1.0
    used = [
        i for i, f in enumerate(DENSE_FEATURES) if config.dense_subset is None or f in config.dense_subset
    ]
    z = np.clip((dense - mean) / std, -Z_CLIP, Z_CLIP)[:, used]

    domains = np.array([r.domain for r in rows])
    zc = z.copy()
    yc = y.copy()
    for d in sorted(set(domains.tolist())):
        m = domains == d
        zc[m] -= zc[m].mean(axis=0)
        yc[m] -= yc[m].mean()
    w = np.linalg.solve(zc.T @ zc + config.ridge * np.eye(len(used)), zc.T @ yc)

    dense_w = [0.0] * len(DENSE_FEATURES)
    for i, wi in zip(used, w, strict=True):
        dense_w[i] = 4.0 * float(wi)
    dense_w[DENSE_FEATURES.index("log_words")] += 4.0 * config.length_prior
    base = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    return {
        "format": MODEL_FORMAT,
        "dense_features": list(DENSE_FEATURES),
        "dense_mean": [round(float(x), 6) for x in mean],
        "dense_std": [round(float(x), 6) for x in std],
        "dense_weights": [round(x, 6) for x in dense_w],
        "token_weights": {},
        "bias": round(math.log(base / (1 - base)), 6),
        "metadata": {},
    }


def method(
    config: TrainConfig, cache: FeatureCache | None = None, common_bias: float | None = None
) -> evaluate.Method:
    """A CV method: train on some rows, score others with the pure-Python scorer (as in production).

    ``common_bias``: score every fold's model with this constant term instead of its own. Leave-domain-out
    CV pools out-of-fold scores from 40 models, and each refits its constant to the base rate of the
    *other* domains, which runs against the held-out domain's own rate (a domain where the strong model
    often wins leaves a lower rate behind, so its scores are pushed down). A deployed model has one
    constant, which cannot reorder prompts; pooling with the full-data model's constant measures what the
    features rank, and keeps the scores on the deployed model's scale for calibration.
    """
    shared = cache or FeatureCache()

    def train(rows: Sequence[Row]) -> Callable[[Sequence[str]], list[float]]:
        scorer = Scorer(fit(rows, config, shared))
        if common_bias is None:
            return scorer.score_many
        shift = common_bias - scorer.bias
        return lambda texts: [1.0 / (1.0 + math.exp(-(scorer.logit(t) + shift))) for t in texts]

    return train


# Configurations compared under leave-domain-out CV (see ``compare_methods``).
CANDIDATES: dict[str, TrainConfig] = {
    "within/strong_wins+length": TrainConfig(),
    "within/gain+length": TrainConfig(label="gain"),
    "within/weak_wrong+length": TrainConfig(label="weak_wrong"),
    "within/strong_wins": TrainConfig(length_prior=0.0),
}


def compare_methods(
    rows: Sequence[Row], candidates: dict[str, TrainConfig] | None = None, folds: int | None = None
) -> dict[str, dict[str, float]]:
    """Leave-domain-out metrics of each candidate configuration (for choosing the shipped one)."""
    weak = [r.weak_correct for r in rows]
    strong = [r.strong_correct for r in rows]
    out: dict[str, dict[str, float]] = {}
    for name, cfg in (candidates or CANDIDATES).items():
        scores = evaluate.cross_validate(rows, method(cfg), folds)
        out[name] = evaluate.metrics(scores, weak, strong).as_dict()
    return out


def train(
    csv_path: Path,
    out_path: Path,
    config: TrainConfig | None = None,
    *,
    cv: bool = True,
    cv_folds: int | None = None,
    target_quality: float = 0.95,
) -> dict[str, Any]:
    """Train on the whole CSV and write the model JSON; returns the written model (with metadata).

    With ``cv`` the metadata records leave-domain-out figures for this configuration, the prompt-length
    baseline and random, and suggests thresholds calibrated on the out-of-fold scores (thresholds fitted
    on in-sample scores would be too optimistic)."""
    config = config or TrainConfig()
    rows = read_rows(csv_path)
    model = fit(rows, config)
    meta: dict[str, Any] = {
        "trained_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "training_data": {
            "file": Path(csv_path).name,
            "rows": len(rows),
            "domains": len({r.domain for r in rows}),
        },
        "config": {k: getattr(config, k) for k in ("label", "ridge", "length_prior", "dense_subset")},
        "features": {
            "dense": list(DENSE_FEATURES),
            "method": "within-domain ridge regression + fixed prompt-length prior, as a logit",
        },
        "score_meaning": "higher = the cheap tier is more likely to fall short where the top tier would not",
    }
    if cv:
        scores = evaluate.cross_validate(rows, method(config, common_bias=model["bias"]), cv_folds)
        results = evaluate.compare(rows, scores)
        meta["cv"] = {
            "scheme": "leave-domain-out" if cv_folds is None else f"{cv_folds} domain-grouped folds",
            "price_ratio": evaluate.DEFAULT_PRICE_RATIO,
            **{name: m.as_dict() for name, m in results.items()},
        }
        ts, to = evaluate.calibrate(
            scores,
            [r.weak_correct for r in rows],
            [r.strong_correct for r in rows],
            target_quality=target_quality,
        )
        meta["suggested_thresholds"] = {
            "threshold_sonnet": None if math.isinf(ts) else round(ts, 6),
            "threshold_opus": None if math.isinf(to) else round(to, 6),
            "rule": f"cheapest expected cost reaching {target_quality:.0%} of always-opus quality on "
            f"out-of-fold scores; sonnet assumed to recover {evaluate.DEFAULT_SONNET_GAIN:.0%} "
            "of the opus-over-haiku gain",
        }
    if "routellm" in Path(csv_path).parent.name.lower() or "mmlu" in Path(csv_path).name.lower():
        meta["attribution"] = (
            "Trained on per-prompt outcomes from lm-sys/RouteLLM (Apache-2.0, commit "
            "0b64fdafe049e596a3f5657c219329f24af24198, routellm/evals/mmlu/responses): Mixtral-8x7B-Instruct "
            "(weak) and gpt-4-1106-preview (strong) on 40 MMLU domains (MMLU is MIT)."
        )
    model["metadata"] = meta
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(orjson.dumps(model, option=orjson.OPT_SORT_KEYS) + b"\n")
    return model
