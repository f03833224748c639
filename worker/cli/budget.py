"""``routeq budget set|show``: spending caps per tenant and per batch.

``worker/cli/main.py`` calls :func:`add_budget_commands`; each subcommand sets ``func`` taking the
parsed args and returning an exit code.
"""

from __future__ import annotations

import argparse
import asyncio
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson
from redis.asyncio import Redis

from jobs.connections import cli_client, settings_with_redis
from jobs.contract import check_name
from jobs.results import pico_to_usd
from jobs.settings import Settings
from worker.fleet.budget import SCOPES, Budgets, usd_to_pusd


def add_budget_commands(subparsers: Any) -> None:
    budget = subparsers.add_parser("budget", help="show or set spending caps per tenant and per batch")
    sub = budget.add_subparsers(dest="budget_command", required=True)

    setp = sub.add_parser("set", help="set a cap in USD ('none' removes it)")
    _add_target(setp, required=True)
    setp.add_argument("--usd", required=True, type=_usd, metavar="AMOUNT|none")
    setp.set_defaults(func=cmd_set)

    show = sub.add_parser("show", help="caps, spend and in-flight reservations (all budgets if no target)")
    _add_target(show, required=False)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_show)


def _add_target(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--tenant", metavar="NAME", type=_name("tenant"))
    group.add_argument("--batch", metavar="ID", type=_name("batch"))


def _name(kind: str) -> Any:
    """An argparse type: a tenant or batch name by the enqueue rule, else a one-line usage error."""

    def parse(value: str) -> str:
        try:
            return check_name(kind, value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _usd(value: str) -> Decimal | None:
    if value.strip().lower() == "none":
        return None
    try:
        amount = Decimal(value.strip().lstrip("$"))
        usd_to_pusd(amount)
    except (ArithmeticError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"not a USD amount >= 0: {value!r}") from exc
    return amount


def _target(args: argparse.Namespace) -> tuple[str, str] | None:
    if args.tenant is not None:
        return "tenant", args.tenant
    if args.batch is not None:
        return "batch", args.batch
    return None


def _budgets(settings: Settings) -> tuple[Redis, Budgets]:
    assert settings.redis_url is not None
    redis = cli_client(settings.redis_url)
    return redis, Budgets.for_settings(redis, settings)


async def _set(settings: Settings, scope: str, name: str, usd: Decimal | None) -> dict[str, Any]:
    redis, budgets = _budgets(settings)
    try:
        await budgets.set_cap(scope, name, usd)
        return await budgets.get(scope, name)
    finally:
        await redis.aclose()


async def _show(settings: Settings, target: tuple[str, str] | None) -> list[dict[str, Any]]:
    redis, budgets = _budgets(settings)
    try:
        if target is not None:
            return [await budgets.get(*target)]
        return [await budgets.get(scope, name) for scope in SCOPES for name in await budgets.names(scope)]
    finally:
        await redis.aclose()


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """Exact pico-USD integers plus USD strings (strings, so JSON never rounds them)."""
    out = dict(row)
    for field in ("cap", "spent", "reserved", "remaining"):
        pusd = row[f"{field}_pusd"]
        out[f"{field}_usd"] = None if pusd is None else f"{pico_to_usd(pusd):f}"
    return out


def money(pusd: int) -> str:
    """The table's one money format: dollars to six decimals (as `routeq report`), rounded half up;
    remaining goes negative when a cap is lowered below what is already spent or reserved."""
    usd = pico_to_usd(abs(pusd)).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    return f"{'-' if pusd < 0 else ''}${usd:f}"


def _line(row: dict[str, Any]) -> list[str]:
    cap, remaining = row["cap_pusd"], row["remaining_pusd"]
    return [
        row["scope"],
        row["name"],
        "unlimited" if cap is None else money(cap),
        money(row["spent_pusd"]),
        money(row["reserved_pusd"]),
        "-" if remaining is None else money(remaining),
    ]


def cmd_set(args: argparse.Namespace) -> int:
    target = _target(args)
    assert target is not None  # the argument group is required
    settings = settings_with_redis()
    if settings is None:
        return 2
    row = asyncio.run(_set(settings, target[0], target[1], args.usd))
    cap = "unlimited" if row["cap_pusd"] is None else money(row["cap_pusd"])
    print(f"{row['scope']} {row['name']}: cap {cap}, spent {money(row['spent_pusd'])}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    settings = settings_with_redis()
    if settings is None:
        return 2
    rows = asyncio.run(_show(settings, _target(args)))
    if args.json:
        print(orjson.dumps([_public(r) for r in rows], option=orjson.OPT_INDENT_2).decode())
        return 0
    if not rows:
        print("no budgets")
        return 0
    table = [["scope", "name", "cap", "spent", "reserved", "remaining"], *(_line(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0
