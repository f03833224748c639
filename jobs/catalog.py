"""The model catalog: context windows, minimum cacheable prefix, effective-dated prices.

Data, not code: the defaults ship in ``jobs/data/models.json``; ``ROUTEQ_MODELS_FILE`` points at a JSON
file whose models are merged over them (a model given there replaces the shipped entry whole).
Prices are USD per million tokens, kept as ``Decimal`` so nothing is rounded before it is billed.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator


class PriceBand(BaseModel):
    """Rates per million tokens. ``batch_discount`` is the fraction taken off for Message Batches."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cache_write_5m: Decimal = Field(ge=0)
    cache_write_1h: Decimal = Field(ge=0)
    cache_read: Decimal = Field(ge=0)


class LongContextBand(PriceBand):
    """Rates that apply to the whole request once its prompt (all input kinds) exceeds the threshold."""

    above_input_tokens: int = Field(gt=0)


class PriceEntry(PriceBand):
    effective_from: dt.date
    batch_discount: Decimal = Field(default=Decimal("0.5"), ge=0, le=1)
    long_context: LongContextBand | None = None


class ModelSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(gt=0)
    min_cache_tokens: int = Field(ge=0)
    prices: tuple[PriceEntry, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _sorted(self) -> ModelSpec:
        dates = [p.effective_from for p in self.prices]
        if len(set(dates)) != len(dates):
            raise ValueError("two price entries share an effective_from date")
        object.__setattr__(self, "prices", tuple(sorted(self.prices, key=lambda p: p.effective_from)))
        return self

    def price_on(self, day: dt.date) -> PriceEntry:
        """The entry in force on ``day``; before the first entry, the first one (and never a guess of 0)."""
        chosen = self.prices[0]
        for p in self.prices:
            if p.effective_from <= day:
                chosen = p
        return chosen


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True)
    models: dict[str, ModelSpec]

    def spec(self, model: str) -> ModelSpec:
        try:
            return self.models[model]
        except KeyError:
            raise UnknownModel(model, sorted(self.models)) from None


class UnknownModel(KeyError):
    def __init__(self, model: str, known: list[str]) -> None:
        super().__init__(
            f"model {model!r} is not in the catalog (known: {', '.join(known)}); "
            "add it to the file named by ROUTEQ_MODELS_FILE"
        )


def _load_json(raw: bytes, where: str) -> dict[str, object]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ValueError(f'{where}: expected an object with a "models" object')
    return data["models"]  # type: ignore[no-any-return]


@lru_cache(maxsize=8)
def load_catalog(override: Path | None = None) -> Catalog:
    models: dict[str, object] = dict(
        _load_json(resources.files("jobs").joinpath("data/models.json").read_bytes(), "jobs/data/models.json")
    )
    if override is not None:
        models.update(_load_json(override.read_bytes(), str(override)))
    return Catalog.model_validate({"models": models})
