from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest

from jobs.catalog import ModelSpec, load_catalog
from jobs.results import Cost, Usage
from worker.policy.pricing import (
    baseline_cost,
    is_batch_tier,
    max_cost,
    price_call,
    price_response,
    rates_are_exact,
    uncached_cost,
)

DAY = dt.date(2026, 11, 1)
CAT = load_catalog()
SONNET = CAT.spec("claude-sonnet-4-5")
OPUS = CAT.spec("claude-opus-4-5")
HAIKU55 = CAT.spec("claude-haiku-5-5")


def entry(frm: str, inp: str, **kw: object) -> dict[str, object]:
    i = Decimal(inp)
    base: dict[str, object] = {
        "effective_from": frm,
        "input": i,
        "output": i * 5,
        "cache_write_5m": i * Decimal("1.25"),
        "cache_write_1h": i * 2,
        "cache_read": i / 10,
    }
    base.update(kw)
    return base


def spec(*entries: dict[str, object]) -> ModelSpec:
    return ModelSpec.model_validate(
        {"context_window": 200_000, "max_output_tokens": 8192, "min_cache_tokens": 1024, "prices": entries}
    )


def test_itemised_arithmetic_by_hand() -> None:
    u = Usage(
        input_tokens=1000,
        output_tokens=400,
        cache_write_5m_tokens=2000,
        cache_write_1h_tokens=500,
        cache_read_tokens=10_000,
    )
    c = price_call(SONNET, u, DAY)
    # sonnet-4-5: 3 / 15 / 3.75 / 6 / 0.30 USD per MTok -> pico per token = rate * 1e6
    assert c == Cost(
        input_pusd=1000 * 3_000_000,
        output_pusd=400 * 15_000_000,
        cache_write_5m_pusd=2000 * 3_750_000,
        cache_write_1h_pusd=500 * 6_000_000,
        cache_read_pusd=10_000 * 300_000,
    )
    assert c.total_pusd == 22_500_000_000  # 0.0225 USD


def test_one_token_of_each_kind_on_opus() -> None:
    u = Usage(
        input_tokens=1, output_tokens=1, cache_write_5m_tokens=1, cache_write_1h_tokens=1, cache_read_tokens=1
    )
    c = price_call(OPUS, u, DAY)
    assert (c.input_pusd, c.output_pusd, c.cache_write_5m_pusd, c.cache_write_1h_pusd, c.cache_read_pusd) == (
        5_000_000,
        25_000_000,
        6_250_000,
        10_000_000,
        500_000,
    )


def test_effective_dates() -> None:
    s = spec(entry("2026-03-01", "2"), entry("2026-01-01", "1"))  # given unsorted on purpose
    u = Usage(input_tokens=1_000_000)
    at = {
        d: price_call(s, u, dt.date.fromisoformat(d)).input_pusd
        for d in ("2025-06-01", "2026-01-01", "2026-02-28", "2026-03-01", "2027-01-01")
    }
    assert at == {
        "2025-06-01": 10**12,  # before the first entry: the first one, never 0
        "2026-01-01": 10**12,
        "2026-02-28": 10**12,  # the day before the change
        "2026-03-01": 2 * 10**12,  # on the change
        "2027-01-01": 2 * 10**12,
    }


def test_batch_discount_applies_to_every_line() -> None:
    u = Usage(
        input_tokens=100,
        output_tokens=10,
        cache_write_5m_tokens=7,
        cache_write_1h_tokens=3,
        cache_read_tokens=1000,
    )
    full, half = price_call(SONNET, u, DAY), price_call(SONNET, u, DAY, batch=True)
    for f in Cost.model_fields:
        assert getattr(half, f) * 2 == getattr(full, f)
    s = spec(entry("2026-01-01", "1", batch_discount="0.3"))
    assert price_call(s, Usage(output_tokens=1000), DAY, batch=True).output_pusd == 1000 * 5_000_000 * 7 // 10


def test_long_context_band_threshold() -> None:
    # claude-haiku-5-5: 0.10/0.50/0.125/0.20/0.01 up to 100k prompt tokens, 0.50/2.50/0.625/1.00/0.05 above
    at = Usage(input_tokens=40_000, cache_write_5m_tokens=30_000, cache_read_tokens=30_000, output_tokens=10)
    over = at.model_copy(update={"input_tokens": 40_001})
    c_at, c_over = price_call(HAIKU55, at, DAY), price_call(HAIKU55, over, DAY)
    assert c_at == Cost(
        input_pusd=40_000 * 100_000,
        cache_write_5m_pusd=30_000 * 125_000,
        cache_read_pusd=30_000 * 10_000,
        output_pusd=10 * 500_000,
    )
    # one over: the whole request, output too, at the long-context rates
    assert c_over == Cost(
        input_pusd=40_001 * 500_000,
        cache_write_5m_pusd=30_000 * 625_000,
        cache_read_pusd=30_000 * 50_000,
        output_pusd=10 * 2_500_000,
    )
    # the band is chosen on the whole prompt, so reads count toward it
    assert price_call(HAIKU55, Usage(input_tokens=1, cache_read_tokens=100_000), DAY).input_pusd == 500_000


def test_read_rate_is_per_model_not_a_tenth() -> None:
    # haiku-5-5 reads at 0.1x, sonnet-5-5 at 0.05x input: a hard-coded 0.1 would get this wrong
    s55 = CAT.spec("claude-sonnet-5-5")
    assert price_call(s55, Usage(cache_read_tokens=1000), DAY).cache_read_pusd == 1000 * 100_000
    assert price_call(s55, Usage(input_tokens=1000), DAY).input_pusd == 1000 * 2_000_000
    odd = spec(entry("2026-01-01", "3", cache_read="0.12"))
    assert price_call(odd, Usage(cache_read_tokens=10), DAY).cache_read_pusd == 1_200_000


def test_baseline_uncached_and_savings() -> None:
    u = Usage(input_tokens=100, cache_write_5m_tokens=2000, cache_read_tokens=8000, output_tokens=50)
    base = baseline_cost(OPUS, u, DAY)
    unc = uncached_cost(SONNET, u, DAY)
    act = price_call(SONNET, u, DAY).total_pusd
    assert base == 10_100 * 5_000_000 + 50 * 25_000_000
    assert unc == 10_100 * 3_000_000 + 50 * 15_000_000
    assert act == 100 * 3_000_000 + 2000 * 3_750_000 + 8000 * 300_000 + 50 * 15_000_000
    assert base > unc > act  # routing and caching each save


def test_baseline_uses_long_context_of_top_model() -> None:
    u = Usage(input_tokens=150_000, output_tokens=1)
    assert baseline_cost(HAIKU55, u, DAY) == 150_000 * 500_000 + 2_500_000


def test_max_cost_is_an_upper_bound() -> None:
    m = max_cost(SONNET, 5000, 1000, DAY)
    assert m == 5000 * 6_000_000 + 1000 * 15_000_000  # all input as a 1h write
    rng = random.Random(7)
    for _ in range(300):
        w5, w1, rd = rng.randrange(0, 3000), rng.randrange(0, 3000), rng.randrange(0, 3000)
        inp = rng.randrange(0, 3000)
        out = rng.randrange(0, 1000)
        u = Usage(
            input_tokens=inp,
            cache_write_5m_tokens=w5,
            cache_write_1h_tokens=w1,
            cache_read_tokens=rd,
            output_tokens=out,
        )
        for s in (SONNET, OPUS, HAIKU55):
            assert price_call(s, u, DAY).total_pusd <= max_cost(s, u.prompt_tokens, 1000, DAY)
    # a catalog whose input rate exceeds its write rates: the bound still holds
    weird = spec(entry("2026-01-01", "3", cache_write_1h="1", cache_write_5m="1"))
    assert max_cost(weird, 10, 0, DAY) == 10 * 3_000_000
    assert max_cost(SONNET, 10, 10, DAY, batch=True) * 2 == max_cost(SONNET, 10, 10, DAY)


def test_shipped_catalog_rates_are_exact() -> None:
    for name, s in CAT.models.items():
        for e in s.prices:
            assert rates_are_exact(e), name
            assert rates_are_exact(e, batch=True), name
    assert not rates_are_exact(spec(entry("2026-01-01", "0.0000003")).prices[0])


def _random_usages(rng: random.Random, n: int) -> list[Usage]:
    return [
        Usage(
            input_tokens=rng.randrange(0, 5000),
            output_tokens=rng.randrange(0, 2000),
            cache_write_5m_tokens=rng.randrange(0, 3000),
            cache_write_1h_tokens=rng.randrange(0, 3000),
            cache_read_tokens=rng.randrange(0, 20000),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-sonnet-5-5", "claude-opus-4-1"])
def test_sums_reconcile_exactly(model: str, batch: bool) -> None:
    s = CAT.spec(model)
    us = _random_usages(random.Random(model), 500)
    summed_cost = sum((price_call(s, u, DAY, batch) for u in us), Cost())
    summed_usage = sum(us, Usage())
    assert summed_cost == price_call(s, summed_usage, DAY, batch)


def test_fractional_rates_reconcile_within_bound() -> None:
    # 0.0000007 USD/MTok = 0.7 pico per token: each line rounds, so sums drift, but by <= 1/2 per line
    s = spec(entry("2026-01-01", "0.0000007"))
    us = _random_usages(random.Random(3), 400)
    summed = sum((price_call(s, u, DAY) for u in us), Cost())
    whole = price_call(s, sum(us, Usage()), DAY)
    drift = abs(summed.total_pusd - whole.total_pusd)
    assert drift <= 5 * len(us) // 2
    assert drift > 0  # the rounding is real here (so the bound is what protects us)
    # half-even: 0.5 pico rounds to 0, 1.5 to 2 (no upward bias over many calls)
    half = spec(entry("2026-01-01", "0.0000005"))
    assert price_call(half, Usage(input_tokens=1), DAY).input_pusd == 0
    assert price_call(half, Usage(input_tokens=3), DAY).input_pusd == 2


def test_price_follows_the_responses_service_tier() -> None:
    """Batch rates only when the API says the answer was billed at the batch tier; caching stacks."""
    haiku = CAT.spec("claude-haiku-4-5")
    u = Usage(
        input_tokens=1, output_tokens=1, cache_write_5m_tokens=1, cache_write_1h_tokens=1, cache_read_tokens=1
    )
    batch = price_response(haiku, u, DAY, "batch")
    # claude-haiku-4-5: 1 USD/MTok input = 1e6 pico-USD a token; in a batch read 0.05x, 5m write 0.625x,
    # 1h write 1.0x of base input, output 2.5x.
    assert (batch.input_pusd, batch.cache_read_pusd) == (500_000, 50_000)
    assert (batch.cache_write_5m_pusd, batch.cache_write_1h_pusd, batch.output_pusd) == (
        625_000,
        1_000_000,
        2_500_000,
    )
    for tier in ("standard", "priority", None, "BATCH"):
        assert price_response(haiku, u, DAY, tier) == price_call(haiku, u, DAY)
    assert is_batch_tier("batch") and not is_batch_tier("standard") and not is_batch_tier(None)
