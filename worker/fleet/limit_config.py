"""Fleet-wide limits as configured: settings overlaid with runtime overrides (``routeq limits``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from jobs.connections import as_text
from jobs.keys import Keys
from jobs.settings import Settings
from jobs.tiers import TIER_ORDER, Tier

LimitKind = Literal["concurrency", "rpm", "itpm", "otpm"]
LIMIT_KINDS: tuple[LimitKind, ...] = ("concurrency", "rpm", "itpm", "otpm")
RATE_KINDS: tuple[LimitKind, ...] = ("rpm", "itpm", "otpm")
UNLIMITED = "none"


def _arg(limit: int | None) -> str:
    return UNLIMITED if limit is None else str(limit)


# --- runtime limits ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitValue:
    value: int | None  # None = unlimited
    source: Literal["settings", "runtime"]


def _parse_override(raw: str) -> int | None:
    if raw.strip().lower() in (UNLIMITED, "", "0"):
        return None
    n = int(float(raw))
    return n if n > 0 else None


async def limits_detail(
    redis: Redis, keys: Keys, settings: Settings
) -> dict[Tier, dict[LimitKind, LimitValue]]:
    """Effective limits per tier and kind, and whether each comes from settings or a runtime override."""
    stored: dict[Any, Any] = await redis.hgetall(keys.limits_config)  # type: ignore[misc]
    raw = {as_text(k): as_text(v) for k, v in stored.items()}
    out: dict[Tier, dict[LimitKind, LimitValue]] = {}
    for tier in TIER_ORDER:
        base = settings.tier_limits(tier)
        per: dict[LimitKind, LimitValue] = {}
        for kind in LIMIT_KINDS:
            override = raw.get(f"{tier}:{kind}")
            if override is None:
                per[kind] = LimitValue(getattr(base, kind), "settings")
            else:
                per[kind] = LimitValue(_parse_override(override), "runtime")
        out[tier] = per
    return out


async def set_limits(
    redis: Redis,
    keys: Keys,
    tier: Tier | str,
    concurrency: int | None = None,
    rpm: int | str | None = None,
    itpm: int | str | None = None,
    otpm: int | str | None = None,
) -> dict[str, str]:
    """Override limits fleet-wide at runtime; ``None`` leaves a kind as it is, ``0``/``"none"`` makes a
    rate unlimited. Publishes a ``limits:<tier>`` event so waiting workers re-check at once.
    Returns the fields written."""
    tier = Tier(tier)
    fields: dict[str, str] = {}
    if concurrency is not None:
        if int(concurrency) < 1:
            raise ValueError("concurrency must be >= 1")
        fields[f"{tier}:concurrency"] = str(int(concurrency))
    for kind, value in (("rpm", rpm), ("itpm", itpm), ("otpm", otpm)):
        if value is None:
            continue
        if isinstance(value, str) and value.strip().lower() == UNLIMITED:
            fields[f"{tier}:{kind}"] = UNLIMITED
            continue
        n = int(value)
        if n < 0:
            raise ValueError(f"{kind} must be >= 0 (0 = unlimited)")
        fields[f"{tier}:{kind}"] = UNLIMITED if n == 0 else str(n)
    if fields:
        await redis.hset(keys.limits_config, mapping=fields)  # type: ignore[misc]
        await redis.publish(keys.limits_channel, f"limits:{tier}")
    return fields


async def reset_limits(
    redis: Redis, keys: Keys, tier: Tier | str, kinds: tuple[str, ...] = LIMIT_KINDS
) -> None:
    """Drop runtime overrides so the settings apply again."""
    tier = Tier(tier)
    await redis.hdel(keys.limits_config, *(f"{tier}:{k}" for k in kinds))  # type: ignore[misc]
    await redis.publish(keys.limits_channel, f"limits:{tier}")
