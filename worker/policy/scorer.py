"""The learned complexity score: how likely the cheap tier is to fall short on a prompt, in [0, 1].

A logistic model over a few hand-made features (length, digits, maths symbols, question shape,
reasoning cues) and a bag of words kept only if they occur across many training domains (so that the
model learns what makes a question hard, not which subject is hard in the training set). Inference is
pure Python and deterministic; the weights ship as JSON in ``worker/data/router_model.json`` and are
trained by ``worker/routerlab/train.py`` (``routeq router train``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

MODEL_FORMAT = "routeq-router/1"
# Standardised features are clipped to this many standard deviations (training does the same).
Z_CLIP = 3.0

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_DIGIT = re.compile(r"\d")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_MATH = re.compile(r"[=+\-*/^<>≤≥∑∫√π∞±\u00d7÷|_]|\\[a-z]+")
_OPTION = re.compile(r"^\s*[A-H][.)]\s", re.MULTILINE)
# Word sets rather than big alternations: set lookups keep scoring well above 500 prompts/s.
_NEGATION = frozenset({"not", "except", "least", "false", "incorrect", "never"})
_REASONING = frozenset(
    {"calculate", "compute", "find", "determine", "solve", "prove", "derive", "estimate", "probability"}
    | {"suppose", "assume", "if", "then", "let", "given", "statement"}
)
_REASONING_PHRASES = ("how many", "how much", "what is the value")
_CAPITALIZED = re.compile(r"\b[A-Z][a-z]+")

# Order matters: it is the order of ``dense_weights`` in the model file.
DENSE_FEATURES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_lines",
    "digit_frac",
    "log_numbers",
    "math_frac",
    "log_options",
    "log_option_chars",
    "negation",
    "reasoning",
    "question_mark",
    "mean_word_len",
    "capitalized_frac",
)


def dense_features(text: str) -> list[float]:
    """Hand-made features of a prompt, in ``DENSE_FEATURES`` order (unscaled)."""
    n = max(len(text), 1)
    lower = text.lower()
    words = _WORD.findall(lower)
    nw = max(len(words), 1)
    option_starts = [m.end() for m in _OPTION.finditer(text)]
    option_chars = 0
    for start in option_starts:
        end = text.find("\n", start)
        option_chars += (len(text) if end < 0 else end) - start
    return [
        math.log1p(len(text)),
        math.log1p(len(words)),
        math.log1p(text.count("\n")),
        len(_DIGIT.findall(text)) / n,
        math.log1p(len(_NUMBER.findall(text))),
        len(_MATH.findall(text)) / n,
        math.log1p(len(option_starts)),
        math.log1p(option_chars / max(len(option_starts), 1)),
        float(any(w in _NEGATION for w in words)),
        math.log1p(sum(w in _REASONING for w in words) + sum(lower.count(ph) for ph in _REASONING_PHRASES)),
        float("?" in text),
        sum(len(w) for w in words) / nw,
        len(_CAPITALIZED.findall(text)) / nw,
    ]


def tokens(text: str) -> set[str]:
    """The distinct lowercase words of a prompt (the bag-of-words side of the model)."""
    return set(_WORD.findall(text.lower()))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class ModelFileError(ValueError):
    """The router model file is missing fields or of another format."""


class Scorer:
    """Scores prompts with a trained model. Construct with :meth:`load` (cached) or from a dict."""

    def __init__(self, model: dict[str, Any]) -> None:
        if model.get("format") != MODEL_FORMAT:
            raise ModelFileError(f"router model format is {model.get('format')!r}, expected {MODEL_FORMAT!r}")
        try:
            names = tuple(model["dense_features"])
            if names != DENSE_FEATURES:
                raise ModelFileError(f"router model was trained on other features: {list(names)}")
            self._mean = [float(x) for x in model["dense_mean"]]
            self._scale = [float(x) for x in model["dense_std"]]
            self._dense_w = [float(x) for x in model["dense_weights"]]
            self._token_w: dict[str, float] = {str(k): float(v) for k, v in model["token_weights"].items()}
            self._bias = float(model["bias"])
        except (KeyError, TypeError) as e:
            raise ModelFileError(f"router model file is incomplete: {e}") from None
        if not (len(self._mean) == len(self._scale) == len(self._dense_w) == len(DENSE_FEATURES)):
            raise ModelFileError("router model dense arrays do not match the feature list")
        self.metadata: dict[str, Any] = dict(model.get("metadata", {}))

    @property
    def bias(self) -> float:
        """The model's constant term (a logit): it shifts every score alike and never reorders prompts."""
        return self._bias

    @classmethod
    def load(cls, path: Path | None = None) -> Scorer:
        """The model at ``path`` (default: the shipped one). Cached per path: a worker parses it once."""
        return _load_cached(None if path is None else str(Path(path).resolve()))

    def logit(self, text: str) -> float:
        z = self._bias
        for x, m, s, w in zip(dense_features(text), self._mean, self._scale, self._dense_w, strict=True):
            # Clipped: a feature nearly constant in training (e.g. MMLU's four options) must not swing
            # the score on prompts of another shape.
            z += w * min(max((x - m) / s, -Z_CLIP), Z_CLIP)
        toks = tokens(text) if self._token_w else None
        if toks:
            # Binary bag of words, L2-normalised so long prompts do not dominate through word count.
            norm = 1.0 / math.sqrt(len(toks))
            tw = self._token_w
            z += norm * sum(tw.get(t, 0.0) for t in toks)
        return z

    def score(self, text: str) -> float:
        return _sigmoid(self.logit(text))

    def score_many(self, texts: Iterable[str]) -> list[float]:
        return [self.score(t) for t in texts]

    @property
    def thresholds(self) -> tuple[float | None, float | None]:
        """Suggested (threshold_sonnet, threshold_opus) stored with the model, if any."""
        t = self.metadata.get("suggested_thresholds") or {}
        return t.get("threshold_sonnet"), t.get("threshold_opus")


@lru_cache(maxsize=8)
def _load_cached(path: str | None) -> Scorer:
    if path is None:
        raw = resources.files("worker.policy").joinpath("data/router_model.json").read_bytes()
    else:
        raw = Path(path).read_bytes()
    return Scorer(orjson.loads(raw))


def default_scorer() -> Scorer:
    """The shipped model, loaded once per process."""
    return Scorer.load()
