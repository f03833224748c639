"""Exact, itemised pricing of model calls in integer pico-USD (pure functions over the catalog).

Rates are Decimal USD per million tokens, so one token costs ``rate * 10**6`` pico-USD. Each line item
(input, output, 5m write, 1h write, read) is computed exactly in Decimal and then rounded once to an
integer with ROUND_HALF_EVEN; the total is the sum of the rounded lines (never rounded again).

Reconciliation: when every per-token rate is a whole number of pico-USD (true for every shipped catalog
entry, with or without the batch discount: see :func:`rates_are_exact`), each line is ``tokens * rate``
exactly, so summing many calls' ``Cost`` equals pricing their summed ``Usage``. Otherwise each line of
each call is off by at most half a pico-USD, so the sums differ by at most ``5 * calls / 2`` pico-USD.

Long context: once a request's prompt (uncached input + cache writes + cache reads) exceeds the band's
``above_input_tokens``, the whole request (output included) is billed at the band's rates, as Anthropic
bills it. The batch discount multiplies every line, long-context band included.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from functools import cache

from jobs.catalog import ModelSpec, PriceBand, PriceEntry
from jobs.results import Cost, Usage

# USD per million tokens -> pico-USD per token.
PICO_PER_TOKEN_PER_RATE = Decimal(10**6)
_ONE = Decimal(1)


def band_for(entry: PriceEntry, prompt_tokens: int) -> PriceBand:
    """The rates for a request whose prompt is ``prompt_tokens`` long (strictly above the threshold)."""
    lc = entry.long_context
    if lc is not None and prompt_tokens > lc.above_input_tokens:
        return lc
    return entry


def _factor(entry: PriceEntry, batch: bool) -> Decimal:
    return _ONE - entry.batch_discount if batch else _ONE


def _line(tokens: int, rate: Decimal, factor: Decimal) -> int:
    if not tokens:
        return 0
    per_token = _pusd_per_token(rate, factor)
    if per_token is not None:
        return tokens * per_token  # an integer price per token: exact without Decimal
    # 60 digits: tokens (<=1e12) * rate * 1e6 stays exact, so the only rounding is the final one.
    with localcontext() as ctx:
        ctx.prec = 60
        exact = Decimal(tokens) * rate * PICO_PER_TOKEN_PER_RATE * factor
        return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


@cache
def _pusd_per_token(rate: Decimal, factor: Decimal) -> int | None:
    """pico-USD per token when that is a whole number (every list price so far), else None."""
    with localcontext() as ctx:
        ctx.prec = 60
        exact = rate * PICO_PER_TOKEN_PER_RATE * factor
    return int(exact) if exact == exact.to_integral_value() else None


def price_call(spec: ModelSpec, usage: Usage, day: dt.date, batch: bool = False) -> Cost:
    """The itemised cost of one call with ``usage`` on ``spec``, at the prices in force on ``day``."""
    entry = spec.price_on(day)
    band = band_for(entry, usage.prompt_tokens)
    f = _factor(entry, batch)
    return Cost(
        input_pusd=_line(usage.input_tokens, band.input, f),
        output_pusd=_line(usage.output_tokens, band.output, f),
        cache_write_5m_pusd=_line(usage.cache_write_5m_tokens, band.cache_write_5m, f),
        cache_write_1h_pusd=_line(usage.cache_write_1h_tokens, band.cache_write_1h, f),
        cache_read_pusd=_line(usage.cache_read_tokens, band.cache_read, f),
    )


BATCH_TIER = "batch"


def is_batch_tier(service_tier: str | None) -> bool:
    """Whether a response's ``usage.service_tier`` bills it at the Message Batches discount."""
    return service_tier == BATCH_TIER


def price_response(spec: ModelSpec, usage: Usage, day: dt.date, service_tier: str | None) -> Cost:
    """The cost of one answered request, at the rates its own ``service_tier`` says it was billed at."""
    return price_call(spec, usage, day, batch=is_batch_tier(service_tier))


def _uncached(usage: Usage) -> Usage:
    return Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.output_tokens)


def uncached_cost(spec: ModelSpec, usage: Usage, day: dt.date, *, batch: bool = False) -> int:
    """The same tokens on ``spec`` with no caching: every prompt token at the input rate."""
    return price_call(spec, _uncached(usage), day, batch).total_pusd


def baseline_cost(top_spec: ModelSpec, usage: Usage, day: dt.date, *, batch: bool = False) -> int:
    """The same tokens on the top tier, uncached. Routing saving = baseline - uncached."""
    return uncached_cost(top_spec, usage, day, batch=batch)


def max_cost(
    spec: ModelSpec, input_tokens: int, max_output_tokens: int, day: dt.date, *, batch: bool = False
) -> int:
    """An upper bound for budget reservations: every prompt token at the dearest prompt rate.

    That is the 1h cache write for every shipped model; ``max`` guards catalogs where it is not.
    ``input_tokens`` must itself be an upper bound of the prompt: the band is chosen from it.
    """
    entry = spec.price_on(day)
    band = band_for(entry, input_tokens)
    f = _factor(entry, batch)
    dearest = max(band.input, band.cache_write_5m, band.cache_write_1h, band.cache_read)
    return _line(input_tokens, dearest, f) + _line(max_output_tokens, band.output, f)


def rates_are_exact(entry: PriceEntry, batch: bool = False) -> bool:
    """True when every per-token rate (both bands) is a whole number of pico-USD: sums reconcile exactly."""
    f = _factor(entry, batch)
    bands: list[PriceBand] = [entry] if entry.long_context is None else [entry, entry.long_context]
    rates = [r for b in bands for r in (b.input, b.output, b.cache_write_5m, b.cache_write_1h, b.cache_read)]
    with localcontext() as ctx:
        ctx.prec = 60
        return all((r * PICO_PER_TOKEN_PER_RATE * f) % 1 == 0 for r in rates)
