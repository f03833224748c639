"""Configuration of the stand-in API: per-model behaviour (latency, caching minimum, limits) and globals.

A model id is resolved in this order: an exact key of ``models``; the longest key that is a prefix of the
id (so ``claude-haiku-4-5-20251001`` uses ``claude-haiku-4-5``); then, for any ``claude-*`` id, family
defaults. Anything else is an unknown model (400), like a typo would be on the real API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import orjson

from worker.sandbox.mock_api.faults import FaultPlan
from worker.sandbox.mock_api.replay import ReplayBook

Clock = Callable[[], float]
_T = TypeVar("_T")

# Family defaults for the minimum cacheable prefix; the docs disagree for some models, hence overridable.
_FAMILY_MIN_CACHE: tuple[tuple[str, int], ...] = (("haiku", 4096), ("sonnet", 1024), ("opus", 4096))
_DEFAULT_MIN_CACHE = 1024
DEFAULT_CONTEXT_WINDOW = 200_000
DEFAULT_MAX_OUTPUT_TOKENS = 64_000


@dataclass(frozen=True, slots=True)
class ModelOverrides:
    """What a config file may say about one model; None means "use the global or family default"."""

    latency_ms: float | None = None
    ms_per_output_token: float | None = None
    min_cache_tokens: int | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    max_concurrency: int | None = None
    rpm: int | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Fully resolved behaviour of one model id."""

    model: str
    latency_ms: float
    ms_per_output_token: float
    min_cache_tokens: int
    context_window: int
    max_output_tokens: int
    max_concurrency: int | None
    rpm: int | None


@dataclass(slots=True)
class MockConfig:
    models: dict[str, ModelOverrides] = field(default_factory=dict)
    latency_ms: float = 0.0
    ms_per_output_token: float = 0.0
    faults: FaultPlan = field(default_factory=FaultPlan)
    seed: int | None = None
    # None: any non-empty key is accepted; else the key must match exactly.
    api_key: str | None = None
    # Seconds a "timeout" fault hangs at most when the client does not go away first.
    hang_s: float = 600.0
    # retry-after (seconds) sent with injected 429s; limiter 429s compute their own.
    retry_after_s: int = 1
    # Message Batches: seconds from create to ended, and the create-time limits.
    batch_latency_s: float = 2.0
    batch_max_requests: int = 100_000
    batch_max_bytes: int = 256 * 1024 * 1024
    # Requests that may wait in the processing queue across all batches; None: unlimited.
    batch_queue_cap: int | None = None
    # Seconds create holds its response after the batch exists (a client dying in that window leaves
    # a batch it never learned the id of).
    batch_create_delay_s: float = 0.0
    # Monotonic seconds; tests inject a fake one to expire cache entries and refill buckets.
    clock: Clock = time.monotonic
    # Recorded answers to replay (``--replay``); None: synthetic answers only.
    replay: ReplayBook | None = None

    def resolve(self, model: str) -> ModelSpec | None:
        over = self.models.get(model)
        if over is None:
            best = ""
            for key in self.models:
                if model.startswith(key) and len(key) > len(best):
                    best = key
            if best:
                over = self.models[best]
            elif model.startswith("claude-"):
                over = ModelOverrides()
            else:
                return None
        return ModelSpec(
            model=model,
            latency_ms=_pick(over.latency_ms, self.latency_ms),
            ms_per_output_token=_pick(over.ms_per_output_token, self.ms_per_output_token),
            min_cache_tokens=_pick(over.min_cache_tokens, family_min_cache(model)),
            context_window=_pick(over.context_window, DEFAULT_CONTEXT_WINDOW),
            max_output_tokens=_pick(over.max_output_tokens, DEFAULT_MAX_OUTPUT_TOKENS),
            max_concurrency=over.max_concurrency,
            rpm=over.rpm,
        )


def _pick(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def family_min_cache(model: str) -> int:
    for word, n in _FAMILY_MIN_CACHE:
        if word in model:
            return n
    return _DEFAULT_MIN_CACHE


_OVERRIDE_FIELDS = frozenset(ModelOverrides.__dataclass_fields__)


def overrides_from_json(raw: Mapping[str, Any]) -> ModelOverrides:
    """Known settings only; "prices" and "_..." keys are skipped so routeq's catalog file loads as is."""
    raw = {k: v for k, v in raw.items() if k != "prices" and not k.startswith("_")}
    unknown = set(raw) - _OVERRIDE_FIELDS
    if unknown:
        raise ValueError(f"unknown model setting(s): {', '.join(sorted(unknown))}")
    return ModelOverrides(**dict(raw))


def load_config_file(path: str | Path, base: MockConfig | None = None) -> MockConfig:
    """Read ``{"models": {ID: {...}}, "latency_ms", "ms_per_output_token", "faults", "seed"}``."""
    raw = orjson.loads(Path(path).read_bytes())
    if not isinstance(raw, dict):
        raise ValueError("config file must hold a JSON object")
    cfg = base or MockConfig()
    models = dict(cfg.models)
    for name, entry in (raw.get("models") or {}).items():
        if not isinstance(entry, dict):
            raise ValueError(f"models.{name} must be an object")
        models[name] = overrides_from_json(entry)
    cfg = replace(cfg, models=models)
    if "latency_ms" in raw:
        cfg.latency_ms = float(raw["latency_ms"])
    if "ms_per_output_token" in raw:
        cfg.ms_per_output_token = float(raw["ms_per_output_token"])
    if "seed" in raw:
        cfg.seed = int(raw["seed"])
    if "batch_latency_s" in raw:
        cfg.batch_latency_s = float(raw["batch_latency_s"])
    if "faults" in raw:
        cfg.faults = FaultPlan.from_json(raw["faults"])
    return cfg
