"""The shipped scorer: range, determinism, speed floor, model-file handling."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from worker.policy.scorer import DENSE_FEATURES, MODEL_FORMAT, ModelFileError, Scorer, default_scorer

PROMPTS = [
    "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:",
    "Summarise this paragraph in one sentence.",
    "",
    "Suppose ∑|a_i| diverges and ∑ a_i = 2. Prove that a rearrangement sums to 4. " * 20,
    "A man sued his landlord for breach of the implied warranty of habitability. " * 40,
]


def test_scores_in_unit_interval_and_deterministic() -> None:
    s = default_scorer()
    first = s.score_many(PROMPTS)
    assert all(0.0 <= x <= 1.0 for x in first)
    assert s.score_many(PROMPTS) == first
    assert Scorer.load() is s  # loaded once per process


def test_longer_legal_question_scores_higher_than_trivia() -> None:
    s = default_scorer()
    assert s.score(PROMPTS[4]) > s.score(PROMPTS[0])


def test_prompt_of_another_shape_stays_within_the_clip_bound() -> None:
    # No options, no newline: features far from MMLU's are clipped at 3 sd, so the logit is bounded
    # by bias + 3 * sum|w| (an unclipped near-constant feature would blow far past it).
    s = default_scorer()
    bound = abs(s._bias) + 3 * sum(abs(w) for w in s._dense_w)
    for text in ("Translate 'good morning' into French.", "x" * 100_000, "1\n" * 5000):
        assert abs(s.logit(text)) <= bound + 1e-9
    assert s.score("Translate 'good morning' into French.") < 0.5


def test_shipped_model_has_metadata() -> None:
    meta = default_scorer().metadata
    assert "RouteLLM" in meta["attribution"] and "Apache-2.0" in meta["attribution"]
    assert meta["cv"]["learned"]["apgr"] > meta["cv"]["random"]["apgr"]
    assert set(meta["suggested_thresholds"]) >= {"threshold_sonnet", "threshold_opus"}
    path = Path(__file__).resolve().parent.parent / "worker" / "policy" / "data" / "router_model.json"
    assert path.stat().st_size < 2_000_000


def test_speed_floor() -> None:
    s = default_scorer()
    # MMLU-sized prompts (~500 characters on average).
    prompts = [f"{PROMPTS[i % 2]} {i} " * (1 + i % 12) for i in range(1000)]
    best = float("inf")
    for _ in range(3):  # best of three: a busy CI core should not fail the floor
        t0 = time.perf_counter()
        s.score_many(prompts)
        best = min(best, time.perf_counter() - t0)
    rate = len(prompts) / best
    assert rate > 500, f"{rate:.0f} prompts/s"


def _model(**over: object) -> dict[str, object]:
    n = len(DENSE_FEATURES)
    m: dict[str, object] = {
        "format": MODEL_FORMAT,
        "dense_features": list(DENSE_FEATURES),
        "dense_mean": [0.0] * n,
        "dense_std": [1.0] * n,
        "dense_weights": [0.0] * n,
        "token_weights": {"prove": 2.0},
        "bias": 0.0,
    }
    m.update(over)
    return m


def test_load_from_path_and_token_weights(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    p.write_text(json.dumps(_model()))
    s = Scorer.load(p)
    assert s.score("hello") == pytest.approx(0.5)
    assert s.score("prove it") > 0.5


@pytest.mark.parametrize(
    "over",
    [{"format": "other/1"}, {"dense_features": ["x"]}, {"dense_weights": [0.0]}, {"bias": None}],
)
def test_bad_model_files_are_rejected(over: dict[str, object]) -> None:
    model = _model(**over)
    if over.get("bias", 0.0) is None:
        del model["bias"]
    with pytest.raises(ModelFileError):
        Scorer(model)


def test_score_stream_keeps_order_and_reports_bad_lines() -> None:
    from worker.cli.router import score_stream

    inp = io.StringIO('{"prompt": "What is 2+2?"}\nnot json\n\n{"x": 1}\n{"prompt": "Prove it."}\n')
    out, err = io.StringIO(), io.StringIO()
    assert score_stream(default_scorer(), inp, out, err) == 1
    scores = [json.loads(x)["score"] for x in out.getvalue().splitlines()]
    assert scores == [default_scorer().score("What is 2+2?"), default_scorer().score("Prove it.")]
    assert (
        "line 2: not JSON" in err.getvalue()
        and 'line 4: needs a JSON object with a string "prompt"' in err.getvalue()
    )
    assert score_stream(default_scorer(), io.StringIO('{"prompt": "x"}\n'), io.StringIO(), err) == 0
