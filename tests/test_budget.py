"""Budgets against a real redis-server: atomic reservations, idempotent settle/release, refusals, CLI."""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import AsyncIterator
from decimal import Decimal

import orjson
import pytest
from redis.asyncio import Redis

from jobs.keys import Keys
from jobs.results import PICO
from worker.cli.budget import add_budget_commands
from worker.fleet.budget import (
    CAPS_REFRESH_S,
    BudgetRefusal,
    Budgets,
    Reservation,
    fmt_usd,
    token_for,
    usd_to_pusd,
)
from worker.fleet.redis_scripts import WriteBatch

KEYS = Keys("rqtest")
CENT = PICO // 100


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def budgets(redis: Redis) -> Budgets:
    return Budgets(redis, KEYS)


async def ok(b: Budgets, amount: int, token: str, tenant: str = "acme", batch: str = "b1") -> Reservation:
    got = await b.reserve(tenant, batch, amount, token)
    assert isinstance(got, Reservation), got
    return got


# --- conversions ----------------------------------------------------------------------------------


def test_usd_conversion_is_exact_and_never_rounds_up() -> None:
    assert usd_to_pusd(Decimal("12.34")) == 12_340_000_000_000
    assert usd_to_pusd("0.000000000001") == 1
    assert usd_to_pusd(Decimal("0.0000000000019")) == 1
    assert usd_to_pusd(0) == 0
    for bad in ("-1", "NaN", "Infinity", "abc"):
        with pytest.raises(ValueError):
            usd_to_pusd(bad)
    assert fmt_usd(12_340_000_000_000) == "$12.34"
    assert fmt_usd(5 * PICO) == "$5.00"
    assert fmt_usd(1) == "$0.000000000001"
    assert fmt_usd(1_234_567_000_000) == "$1.234567"


# --- caps and refusals ----------------------------------------------------------------------------


async def test_set_get_and_remove_cap(budgets: Budgets) -> None:
    assert await budgets.get("tenant", "acme") == {
        "scope": "tenant", "name": "acme", "cap_pusd": None, "spent_pusd": 0, "reserved_pusd": 0,
        "remaining_pusd": None,
    }  # fmt: skip
    await budgets.set_cap("tenant", "acme", Decimal("2.50"))
    got = await budgets.get("tenant", "acme")
    assert got["cap_pusd"] == 250 * CENT and got["remaining_pusd"] == 250 * CENT
    await budgets.set_cap("tenant", "acme", None)
    assert (await budgets.get("tenant", "acme"))["cap_pusd"] is None
    with pytest.raises(ValueError):
        await budgets.set_cap("org", "acme", Decimal(1))


async def test_no_caps_accepts_and_still_tracks_spend(budgets: Budgets) -> None:
    r = await ok(budgets, 10**15, "j1:1")
    assert (await budgets.get("tenant", "acme"))["reserved_pusd"] == 10**15
    assert (await budgets.get("batch", "b1"))["reserved_pusd"] == 10**15
    assert await budgets.settle(r, 3 * CENT)
    for scope, name in (("tenant", "acme"), ("batch", "b1")):
        row = await budgets.get(scope, name)
        assert (row["spent_pusd"], row["reserved_pusd"]) == (3 * CENT, 0)


async def test_tenant_cap_refuses_with_clear_reason(budgets: Budgets) -> None:
    await budgets.set_cap("tenant", "acme", Decimal("1.00"))
    first = await ok(budgets, 60 * CENT, "j1:1")
    await budgets.settle(first, 50 * CENT)
    await ok(budgets, 30 * CENT, "j2:1")
    refused = await budgets.reserve("acme", "b1", 30 * CENT, "j3:1")
    assert isinstance(refused, BudgetRefusal) and refused.refused
    assert (refused.scope, refused.name) == ("tenant", "acme")
    assert (refused.cap_pusd, refused.spent_pusd, refused.reserved_pusd, refused.amount_pusd) == (
        100 * CENT, 50 * CENT, 30 * CENT, 30 * CENT,
    )  # fmt: skip
    assert refused.reason == (
        "tenant 'acme' budget cap $1.00 reached: spent $0.50, reserved by calls in flight $0.30, "
        "this call may cost up to $0.30"
    )
    # A refusal leaves nothing behind: the same token can be tried again once there is room.
    assert (await budgets.get("tenant", "acme"))["reserved_pusd"] == 30 * CENT
    await ok(budgets, 20 * CENT, "j3:1")  # exactly fills the cap: <= is allowed


async def test_batch_cap_refuses_independently(budgets: Budgets) -> None:
    await budgets.set_cap("tenant", "acme", Decimal(100))
    await budgets.set_cap("batch", "small", Decimal("0.10"))
    await ok(budgets, 8 * CENT, "a:1", batch="small")
    refused = await budgets.reserve("acme", "small", 3 * CENT, "b:1")
    assert isinstance(refused, BudgetRefusal)
    assert (refused.scope, refused.name, refused.cap_pusd) == ("batch", "small", 10 * CENT)
    assert "batch 'small' budget cap $0.10" in refused.reason
    # The other batch of the same tenant is not affected, and a refusal reserved nothing in the tenant.
    await ok(budgets, 3 * CENT, "c:1", batch="other")
    assert (await budgets.get("tenant", "acme"))["reserved_pusd"] == 11 * CENT


async def test_lowered_cap_refuses_and_shows_negative_remaining(budgets: Budgets) -> None:
    r = await ok(budgets, 0, "j:1")
    await budgets.settle(r, 70 * CENT)
    await budgets.set_cap("batch", "b1", Decimal("0.50"))
    assert isinstance(await budgets.reserve("acme", "b1", 0, "j:2"), BudgetRefusal)
    assert (await budgets.get("batch", "b1"))["remaining_pusd"] == -20 * CENT


# --- races ----------------------------------------------------------------------------------------


async def test_concurrent_reservations_never_exceed_the_cap(redis_url: str) -> None:
    cap = Decimal("1.00")
    clients = [Redis.from_url(redis_url) for _ in range(6)]  # separate connections interleave at Redis
    try:
        fleet = [Budgets(c, KEYS) for c in clients]
        await fleet[0].set_cap("tenant", "acme", cap)
        await fleet[0].set_cap("batch", "b1", Decimal("0.80"))  # the tighter of the two must win
        rng = random.Random(11)
        amounts = [rng.randint(1, 5) * CENT for _ in range(300)]

        async def one(i: int) -> Reservation | BudgetRefusal:
            return await fleet[i % len(fleet)].reserve("acme", "b1", amounts[i], f"job{i}:1")

        results = await asyncio.gather(*(one(i) for i in range(len(amounts))))
        granted = [r for r in results if isinstance(r, Reservation)]
        refused = [r for r in results if isinstance(r, BudgetRefusal)]
        total = sum(r.amount_pusd for r in granted)
        assert total <= 80 * CENT
        assert refused and granted
        assert all(r.scope == "batch" for r in refused)
        # Nothing leaked: the counters equal the sum of what was granted, in both scopes.
        assert (await fleet[0].get("batch", "b1"))["reserved_pusd"] == total
        assert (await fleet[0].get("tenant", "acme"))["reserved_pusd"] == total
        # Every refusal was justified at the moment it was made.
        assert all(r.spent_pusd + r.reserved_pusd + r.amount_pusd > r.cap_pusd for r in refused)

        # Settle half for less than reserved, release the rest, all concurrently: counters come out exact.
        async def close(i: int, r: Reservation) -> None:
            b = fleet[i % len(fleet)]
            await (b.settle(r, r.amount_pusd // 2) if i % 2 else b.release(r))

        await asyncio.gather(*(close(i, r) for i, r in enumerate(granted)))
        spent = sum(r.amount_pusd // 2 for i, r in enumerate(granted) if i % 2)
        row = await fleet[0].get("batch", "b1")
        assert (row["reserved_pusd"], row["spent_pusd"]) == (0, spent)
    finally:
        for c in clients:
            await c.aclose()


async def test_uniform_race_grants_exactly_what_fits(budgets: Budgets) -> None:
    await budgets.set_cap("tenant", "acme", Decimal("0.07"))
    results = await asyncio.gather(*(budgets.reserve("acme", "b1", CENT, f"j{i}:1") for i in range(50)))
    assert sum(isinstance(r, Reservation) for r in results) == 7


# --- idempotency ----------------------------------------------------------------------------------


async def test_settle_is_idempotent_per_token(redis: Redis, budgets: Budgets) -> None:
    r = await ok(budgets, 10 * CENT, token_for("job-1", 1))
    assert r.token == "job-1:1"
    assert await budgets.settle(r, 4 * CENT) is True
    assert await budgets.settle(r, 4 * CENT) is False
    # A re-run after a crash, in a fresh worker, settles the same attempt again: no double count.
    assert await Budgets(redis, KEYS).settle(r, 9 * CENT) is False
    assert await budgets.release(r) is False
    for scope, name in (("tenant", "acme"), ("batch", "b1")):
        row = await budgets.get(scope, name)
        assert (row["spent_pusd"], row["reserved_pusd"]) == (4 * CENT, 0)


async def test_rereserve_of_an_open_token_returns_the_original(budgets: Budgets) -> None:
    first = await ok(budgets, 10 * CENT, "job-2:1")
    again = await ok(budgets, 25 * CENT, "job-2:1")  # the re-run estimated differently
    assert again == first
    assert (await budgets.get("tenant", "acme"))["reserved_pusd"] == 10 * CENT
    await budgets.settle(first, CENT)
    with pytest.raises(ValueError, match="already settled"):
        await budgets.reserve("acme", "b1", CENT, "job-2:1")


async def test_release_returns_the_reservation_once(budgets: Budgets) -> None:
    await budgets.set_cap("batch", "b1", Decimal("0.10"))
    r = await ok(budgets, 10 * CENT, "job-3:1")
    assert isinstance(await budgets.reserve("acme", "b1", CENT, "job-4:1"), BudgetRefusal)
    assert await budgets.release(r) is True
    assert await budgets.release(r) is False
    assert await budgets.settle(r, 5 * CENT) is False  # a released token stays closed
    row = await budgets.get("batch", "b1")
    assert (row["spent_pusd"], row["reserved_pusd"]) == (0, 0)
    await ok(budgets, 10 * CENT, "job-4:1")
    with pytest.raises(ValueError, match="already released"):
        await budgets.reserve("acme", "b1", CENT, "job-3:1")


async def test_release_of_unknown_token_is_a_noop(budgets: Budgets) -> None:
    assert await budgets.release(Reservation("acme", "b1", 5 * CENT, "ghost:1")) is False
    assert (await budgets.get("tenant", "acme"))["reserved_pusd"] == 0


async def test_settle_without_reservation_still_charges_once(budgets: Budgets) -> None:
    r = Reservation("acme", "b1", 0, "late:1")
    assert await budgets.settle(r, 7 * CENT) is True
    assert await budgets.settle(r, 7 * CENT) is False
    assert (await budgets.get("tenant", "acme"))["spent_pusd"] == 7 * CENT


async def test_settling_below_the_estimate_frees_headroom(budgets: Budgets) -> None:
    await budgets.set_cap("tenant", "acme", Decimal("0.10"))
    r = await ok(budgets, 10 * CENT, "a:1")
    assert isinstance(await budgets.reserve("acme", "b1", 5 * CENT, "b:1"), BudgetRefusal)
    await budgets.settle(r, 2 * CENT)
    await ok(budgets, 8 * CENT, "b:1")


async def test_batch_state_expires_tenant_state_does_not(redis: Redis) -> None:
    budgets = Budgets(redis, KEYS, token_ttl_s=3600)
    await budgets.set_cap("tenant", "acme", Decimal(5))
    await budgets.set_cap("batch", "b1", Decimal(1))
    await ok(budgets, CENT, "j:1")
    assert await redis.pttl(KEYS.budget("tenant", "acme")) == -1
    for key in (KEYS.budget("batch", "b1"), KEYS.budget_tokens("b1")):
        assert 3_590_000 < await redis.pttl(key) <= 3_600_000


async def test_names_lists_budgets_per_scope(budgets: Budgets) -> None:
    await budgets.set_cap("tenant", "t2", Decimal(1))
    await ok(budgets, CENT, "x:1", tenant="t1", batch="bb")
    assert await budgets.names("tenant") == ["t1", "t2"]
    assert await budgets.names("batch") == ["bb"]  # the token hash is not a budget


# --- CLI ------------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="routeq")
    add_budget_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


async def test_cli_set_and_show(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("ROUTEQ_KEY_PREFIX", "rqtest")
    monkeypatch.delenv("ROUTEQ_REDIS_URL", raising=False)

    def cli(argv: list[str]) -> int:  # asyncio.run needs its own thread inside a running loop
        return run_cli(argv)

    assert await asyncio.to_thread(cli, ["budget", "set", "--tenant", "acme", "--usd", "12.5"]) == 0
    assert "tenant acme: cap $12.500000, spent $0.000000" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, ["budget", "set", "--batch", "b9", "--usd", "$0.25"]) == 0
    capsys.readouterr()

    assert await asyncio.to_thread(cli, ["budget", "show", "--json"]) == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert [(r["scope"], r["name"], r["cap_pusd"], r["cap_usd"]) for r in rows] == [
        ("tenant", "acme", 12_500_000_000_000, "12.5"),
        ("batch", "b9", 250_000_000_000, "0.25"),
    ]
    assert await asyncio.to_thread(cli, ["budget", "show", "--tenant", "acme"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["scope", "name", "cap", "spent", "reserved", "remaining"]
    assert table[1].split() == ["tenant", "acme", "$12.500000", "$0.000000", "$0.000000", "$12.500000"]

    assert await asyncio.to_thread(cli, ["budget", "set", "--tenant", "acme", "--usd", "none"]) == 0
    assert "cap unlimited" in capsys.readouterr().out


def test_cli_rejects_bad_input(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["budget", "set", "--tenant", "a", "--usd", "-3"],
        ["budget", "set", "--tenant", "a", "--usd", "lots"],
        ["budget", "set", "--usd", "3"],
        ["budget", "set", "--tenant", "a", "--batch", "b", "--usd", "3"],
    ):
        with pytest.raises(SystemExit) as exc:
            run_cli(argv)
        assert exc.value.code == 2, argv
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("ROUTEQ_REDIS_URL", raising=False)
    monkeypatch.chdir("/")  # no .env file with a Redis URL
    assert run_cli(["budget", "show"]) == 2
    assert "no Redis configured" in capsys.readouterr().err


# --- reserving only where a cap applies -------------------------------------------------------------


async def test_uncapped_scopes_skip_the_reservation_but_count_the_spend(redis: Redis) -> None:
    b = Budgets(redis, KEYS)
    r = await b.reserve_if_capped("acme", "b1", 5 * CENT, token_for("job1", 1))
    assert isinstance(r, Reservation) and not r.held
    assert (await b.get("tenant", "acme"))["reserved_pusd"] == 0
    assert await b.release(r)  # nothing held: nothing to free
    batch = WriteBatch(redis)
    b.settle_into(batch, r, 2 * CENT)
    await batch.execute()
    await batch.execute()  # re-sent after a lost reply: charged once
    for scope, name in (("tenant", "acme"), ("batch", "b1")):
        got = await b.get(scope, name)
        assert got["spent_pusd"] == 2 * CENT and got["reserved_pusd"] == 0


async def test_a_cap_set_at_runtime_binds_within_the_refresh(redis: Redis) -> None:
    worker, admin = Budgets(redis, KEYS), Budgets(redis, KEYS)
    assert not await worker.capped("acme", "b1")
    await admin.set_cap("batch", "b1", Decimal("0.10"))
    await asyncio.sleep(CAPS_REFRESH_S + 0.05)
    assert await worker.capped("acme", "b1") and not await worker.capped("acme", "other")
    held = await worker.reserve_if_capped("acme", "b1", 8 * CENT, "t1")
    assert isinstance(held, Reservation) and held.held
    refused = await worker.reserve_if_capped("acme", "b1", 8 * CENT, "t2")
    assert isinstance(refused, BudgetRefusal) and refused.scope == "batch"
    await admin.set_cap("batch", "b1", None)
    await asyncio.sleep(CAPS_REFRESH_S + 0.05)
    assert not await worker.capped("acme", "b1")


async def test_caps_set_before_the_index_existed_are_found(redis: Redis) -> None:
    # A cap written by an older routeq: the hash has it, the index does not exist yet.
    await redis.hset(KEYS.budget("tenant", "legacy"), "cap", str(CENT))  # type: ignore[misc]
    b = Budgets(redis, KEYS)
    assert await b.capped("legacy", "any")
    assert not await b.capped("someone-else", "any")
    refused = await b.reserve_if_capped("legacy", "any", 2 * CENT, "t1")
    assert isinstance(refused, BudgetRefusal) and refused.scope == "tenant"


async def test_callers_due_at_once_share_one_caps_read(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every job admitted in the same moment asked Redis itself: a burst of reads (and of new connections)
    # each second, and at start-up one index rebuild (a SCAN of the keyspace) per waiting job.
    await redis.hset(KEYS.budget("tenant", "legacy"), "cap", str(CENT))  # type: ignore[misc]
    b = Budgets(redis, KEYS)
    reads = {"smembers": 0, "scan": 0}
    smembers, scan_iter = redis.smembers, redis.scan_iter

    def counting(name: str, fn: object) -> object:
        def wrapped(*a: object, **kw: object) -> object:
            reads[name] += 1
            return fn(*a, **kw)  # type: ignore[operator]

        return wrapped

    monkeypatch.setattr(redis, "smembers", counting("smembers", smembers))
    monkeypatch.setattr(redis, "scan_iter", counting("scan", scan_iter))
    got = await asyncio.gather(*(b.capped("legacy" if i % 2 else "other", "any") for i in range(30)))
    assert got == [bool(i % 2) for i in range(30)]
    assert reads == {"smembers": 1, "scan": 2}  # one read; one index rebuild (a scan per scope)
    await asyncio.gather(*(b.capped("other", "any") for _ in range(30)))
    assert reads["smembers"] == 1  # fresh: no read at all
