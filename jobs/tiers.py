"""The three price tiers, cheapest first. Model ids behind them are configuration (see settings)."""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    haiku = "haiku"
    sonnet = "sonnet"
    opus = "opus"

    @property
    def rank(self) -> int:
        return TIER_ORDER.index(self)

    def next_up(self) -> Tier | None:
        i = self.rank + 1
        return TIER_ORDER[i] if i < len(TIER_ORDER) else None


TIER_ORDER: tuple[Tier, ...] = (Tier.haiku, Tier.sonnet, Tier.opus)
TOP_TIER: Tier = TIER_ORDER[-1]


def clamp(tier: Tier, low: Tier, high: Tier) -> Tier:
    return TIER_ORDER[min(max(tier.rank, low.rank), high.rank)]
