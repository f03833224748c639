"""``routeq limits show|set``: inspect and change the fleet-wide per-tier limits at runtime.

:func:`add_limits_commands` adds them to the ``routeq`` parser; each subcommand sets ``func`` taking
the parsed args and returning an exit code. Values are checked before Redis is asked anything.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from jobs.connections import cli_client, settings_with_redis
from jobs.settings import Settings
from jobs.tiers import TIER_ORDER, Tier
from worker.fleet.limit_config import LIMIT_KINDS, limits_detail, reset_limits, set_limits
from worker.fleet.tier_gate import TierGate


def add_limits_commands(subparsers: Any) -> None:
    limits = subparsers.add_parser("limits", help="show or change fleet-wide per-tier limits")
    sub = limits.add_subparsers(dest="limits_command", required=True)

    show = sub.add_parser("show", help="effective limits, their source, in-flight leases, cooldowns")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_show)

    setp = sub.add_parser("set", help="override limits at runtime (0 or 'none' = unlimited rate)")
    setp.add_argument("tier", choices=[t.value for t in TIER_ORDER])
    setp.add_argument("--concurrency", type=_concurrency, metavar="N")
    for kind in ("rpm", "itpm", "otpm"):
        setp.add_argument(f"--{kind}", type=_rate, metavar="N|none")
    setp.add_argument("--reset", action="store_true", help="drop runtime overrides (back to settings) first")
    setp.set_defaults(func=cmd_set)


# No API tier allows more; a larger number is a typo (an extra zero), not a limit.
MAX_LIMIT = 1_000_000


def _whole(v: str, low: int) -> int:
    try:
        n = int(v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a whole number") from None
    if not low <= n <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{n} is out of range ({low} to {MAX_LIMIT:,})")
    return n


def _concurrency(v: str) -> int:
    return _whole(v, 1)


def _rate(v: str) -> int | str:
    if v.strip().lower() == "none":
        return "none"
    return _whole(v, 0)  # 0 = unlimited


async def _show(settings: Settings) -> dict[str, Any]:
    assert settings.redis_url is not None
    redis = cli_client(settings.redis_url)
    try:
        gate = TierGate(redis, settings.keys, settings, owner="cli")
        detail = await limits_detail(redis, settings.keys, settings)
        out: dict[str, Any] = {}
        for tier in TIER_ORDER:
            out[tier.value] = {
                "limits": {
                    kind: {"value": lv.value, "source": lv.source} for kind, lv in detail[tier].items()
                },
                "in_flight": await gate.in_flight(tier),
                "cooldown_s": await gate.cooldown_remaining(tier),
            }
        return out
    finally:
        await redis.aclose()


def _fmt(value: int | None, source: str) -> str:
    shown = "unlimited" if value is None else str(value)
    return f"{shown} ({source})"


def cmd_show(args: argparse.Namespace) -> int:
    settings = settings_with_redis()
    if settings is None:
        return 2
    data = asyncio.run(_show(settings))
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return 0
    header = ["tier", *LIMIT_KINDS, "in_flight", "cooldown_s"]
    rows = [header]
    for tier, d in data.items():
        lim = d["limits"]
        rows.append(
            [tier]
            + [_fmt(lim[k]["value"], lim[k]["source"]) for k in LIMIT_KINDS]
            + [str(d["in_flight"]), f"{d['cooldown_s']:.1f}"]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


async def _set(settings: Settings, args: argparse.Namespace) -> dict[str, str]:
    assert settings.redis_url is not None
    redis = cli_client(settings.redis_url)
    try:
        if args.reset:
            await reset_limits(redis, settings.keys, args.tier)
        return await set_limits(
            redis, settings.keys, Tier(args.tier), args.concurrency, args.rpm, args.itpm, args.otpm
        )
    finally:
        await redis.aclose()


def cmd_set(args: argparse.Namespace) -> int:
    if not args.reset and all(getattr(args, k) is None for k in LIMIT_KINDS):
        print("error: give at least one of --concurrency --rpm --itpm --otpm (or --reset)", file=sys.stderr)
        return 2
    settings = settings_with_redis()
    if settings is None:
        return 2
    written = asyncio.run(_set(settings, args))
    for field, value in sorted(written.items()):
        print(f"{field} = {value}")
    if args.reset:
        print(f"{args.tier}: runtime overrides reset")
    return 0
