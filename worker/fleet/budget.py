"""Optional spending caps per tenant and per batch, enforced fleet-wide in Redis.

Before a call the worker reserves the call's *maximum* cost (``pricing.max_cost``) against both the
tenant's and the batch's budget; after it, it settles the actual cost (or releases the reservation if
nothing was billed). Reserve checks ``spent + reserved + amount <= cap`` atomically for every scope that
has a cap, so concurrent workers cannot jointly overshoot by more than what is already reserved; since each
reservation is an upper bound, spend never exceeds a cap unless a cap is lowered below what is in flight.

State (all integers in pico-USD): ``Keys.budget(scope, name)`` is a hash ``{cap, spent, reserved}``
(no ``cap`` field = unlimited). A per-batch token hash maps ``token -> R:<amount> | S | X`` (reserved,
settled, released) so reserve, settle and release are each idempotent per token (job id + attempt): a job
re-run after a crash never reserves or settles twice.

Only capped scopes need a reservation. ``Keys.budget_capped`` lists the scopes with a cap; a worker reads
it at most once a second (``CAPS_REFRESH_S``) and, for a job whose tenant and batch have none, skips the
reservation (a round trip on the path from a granted slot to the call) and charges the actual cost after
the call with the same idempotent settle. So spend is still counted everywhere, and a cap set at runtime
binds calls admitted from a second later; only calls already in flight then can go past it. Caps set
before the index existed are found by a one-off SCAN (until then every call reserves).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, Final, Literal

from redis.asyncio import Redis

from jobs.connections import as_text
from jobs.keys import Keys
from jobs.results import PICO, pico_to_usd
from jobs.settings import Settings
from worker.fleet.redis_scripts import Scripts, WriteBatch

Scope = Literal["tenant", "batch"]
SCOPES: Final[tuple[Scope, ...]] = ("tenant", "batch")
DEFAULT_TOKEN_TTL_S: Final = 7 * 86400
CAPS_REFRESH_S: Final = 1.0
# Member of Keys.budget_capped saying the set lists every capped scope (it was built or rebuilt).
CAPS_COMPLETE: Final = "~complete"


def token_for(job_id: str, attempt: int) -> str:
    return f"{job_id}:{attempt}"


def usd_to_pusd(usd: Decimal | int | str) -> int:
    """Exact conversion, rounding sub-pico fractions down (a cap never grows by rounding)."""
    try:
        value = Decimal(usd)
    except InvalidOperation as exc:
        raise ValueError(f"not a USD amount: {usd!r}") from exc
    if not value.is_finite() or value < 0:
        raise ValueError(f"a USD amount must be finite and >= 0, got {usd}")
    return int((value * PICO).to_integral_value(rounding=ROUND_FLOOR))


def fmt_usd(pusd: int) -> str:
    """``$1.234567`` style: at least cents, trailing zeros beyond them dropped, exact."""
    usd = pico_to_usd(pusd)
    text = f"{usd:.12f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


@dataclass(frozen=True, slots=True)
class Reservation:
    tenant: str
    batch: str
    amount_pusd: int
    token: str
    # False: no cap on either scope, nothing was held; settling charges the cost all the same.
    held: bool = True

    @property
    def refused(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    scope: Scope
    name: str
    cap_pusd: int
    spent_pusd: int
    reserved_pusd: int
    amount_pusd: int

    @property
    def refused(self) -> bool:
        return True

    @property
    def reason(self) -> str:
        return (
            f"{self.scope} {self.name!r} budget cap {fmt_usd(self.cap_pusd)} reached: spent "
            f"{fmt_usd(self.spent_pusd)}, reserved by calls in flight {fmt_usd(self.reserved_pusd)}, "
            f"this call may cost up to {fmt_usd(self.amount_pusd)}"
        )


def _int(value: Any) -> int:
    return 0 if value is None else int(as_text(value))


def _check_scope(scope: str) -> Scope:
    if scope not in SCOPES:
        raise ValueError(f"budget scope must be one of {SCOPES}, got {scope!r}")
    return scope


class Budgets:
    def __init__(self, redis: Redis, keys: Keys, token_ttl_s: int = DEFAULT_TOKEN_TTL_S) -> None:
        """``token_ttl_s``: how long a call's reservation token is remembered (see :meth:`for_settings`)."""
        self.redis = redis
        self.keys = keys
        self._ttl_ms = str(int(token_ttl_s * 1000))
        self._scripts = Scripts(redis)
        self._capped: frozenset[str] = frozenset()
        self._capped_complete = False
        self._capped_at = -CAPS_REFRESH_S
        self._refreshing: asyncio.Future[None] | None = None

    @classmethod
    def for_settings(cls, redis: Redis, settings: Settings) -> Budgets:
        """Workers and the CLI alike: tokens live as long as the batch they belong to."""
        return cls(redis, settings.keys, token_ttl_s=settings.job_expiry_s + settings.result_ttl_s)

    def _keys(self, tenant: str, batch: str) -> list[str]:
        return [
            self.keys.budget("tenant", tenant),
            self.keys.budget("batch", batch),
            self.keys.budget_tokens(batch),
        ]

    async def set_cap(self, scope: str, name: str, usd: Decimal | None) -> None:
        """Set (``usd``) or remove (``None``) a cap. Lowering it below spend refuses new calls only."""
        key = self.keys.budget(_check_scope(scope), name)
        if usd is None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(key, "cap")
                pipe.srem(self.keys.budget_capped, f"{scope}:{name}")
                await pipe.execute()
            return
        pusd = usd_to_pusd(usd)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "cap", str(pusd))
            pipe.sadd(self.keys.budget_capped, f"{scope}:{name}")
            if scope == "batch":  # batch budgets age out with the batch; tenant budgets are configuration
                pipe.pexpire(key, int(self._ttl_ms))
            await pipe.execute()

    async def get(self, scope: str, name: str) -> dict[str, Any]:
        scope = _check_scope(scope)
        key = self.keys.budget(scope, name)
        cap, spent, reserved = await self.redis.hmget(key, ["cap", "spent", "reserved"])  # type: ignore[misc]
        cap_pusd = None if cap is None else _int(cap)
        spent_pusd, reserved_pusd = _int(spent), _int(reserved)
        remaining = None if cap_pusd is None else cap_pusd - spent_pusd - reserved_pusd
        return {
            "scope": scope,
            "name": name,
            "cap_pusd": cap_pusd,
            "spent_pusd": spent_pusd,
            "reserved_pusd": reserved_pusd,
            "remaining_pusd": remaining,
        }

    async def names(self, scope: str) -> list[str]:
        """Every name with a budget hash in ``scope`` (SCAN, so safe on a busy Redis)."""
        prefix = self.keys.budget(_check_scope(scope), "")
        found = {as_text(k)[len(prefix) :] async for k in self.redis.scan_iter(match=prefix + "*", count=500)}
        return sorted(found)

    async def capped(self, tenant: str, batch: str) -> bool:
        """Whether either scope has a cap (as of at most ``CAPS_REFRESH_S`` ago); True when unsure."""
        if time.monotonic() - self._capped_at >= CAPS_REFRESH_S:
            # One read for every caller due at once: a refresh per caller was a burst of reads (and of
            # new connections) each second, and at start-up one index rebuild (a SCAN) per waiting job.
            if self._refreshing is None:
                self._refreshing = asyncio.ensure_future(self._refresh_caps())
                self._refreshing.add_done_callback(self._refreshed)
            await asyncio.shield(self._refreshing)
        if not self._capped_complete:
            return True
        return f"tenant:{tenant}" in self._capped or f"batch:{batch}" in self._capped

    async def _refresh_caps(self) -> None:
        now = time.monotonic()
        members = {as_text(m) for m in await self.redis.smembers(self.keys.budget_capped)}  # type: ignore[misc]
        if CAPS_COMPLETE not in members:
            members = await self._index_caps()
        self._capped, self._capped_complete = frozenset(members), CAPS_COMPLETE in members
        self._capped_at = now

    def _refreshed(self, task: asyncio.Future[None]) -> None:
        self._refreshing = None
        if not task.cancelled():
            task.exception()  # its callers saw it; retrieved here so it is never reported as lost

    async def _index_caps(self) -> set[str]:
        """Build Keys.budget_capped from the budget hashes (caps set before the index existed)."""
        found = {CAPS_COMPLETE}
        for scope in SCOPES:
            for name in await self.names(scope):
                if await self.redis.hexists(self.keys.budget(scope, name), "cap"):  # type: ignore[misc]
                    found.add(f"{scope}:{name}")
        await self.redis.sadd(self.keys.budget_capped, *found)  # type: ignore[misc]
        return found

    async def reserve_if_capped(
        self, tenant: str, batch: str, amount_pusd: int, token: str
    ) -> Reservation | BudgetRefusal:
        """:meth:`reserve` where a cap applies; elsewhere an unheld Reservation, with no round trip."""
        if await self.capped(tenant, batch):
            return await self.reserve(tenant, batch, amount_pusd, token)
        # Own token per run: a re-run that calls again (its earlier run settled, then died before the
        # attempt was saved) makes a new call, which is charged too.
        return Reservation(tenant, batch, 0, f"{token}:{uuid.uuid4().hex[:8]}", held=False)

    async def reserve(
        self, tenant: str, batch: str, amount_pusd: int, token: str
    ) -> Reservation | BudgetRefusal:
        """Hold ``amount_pusd`` (the call's maximum cost) in both scopes, or say which cap refuses.

        Reserving an already-reserved token returns the original reservation; a token already settled or
        released is a caller bug (tokens are per attempt) and raises ``ValueError``.
        """
        if amount_pusd < 0:
            raise ValueError("amount_pusd must be >= 0")
        reply = await self._scripts["budget_reserve"](
            keys=self._keys(tenant, batch), args=[str(amount_pusd), token, self._ttl_ms]
        )
        status = as_text(reply[0])
        if status == "ok":
            return Reservation(tenant, batch, amount_pusd, token)
        if status == "dup":
            state = as_text(reply[1])
            if state.startswith("R:"):
                return Reservation(tenant, batch, int(state[2:]), token)
            raise ValueError(
                f"budget token {token!r} was already {'settled' if state == 'S' else 'released'}"
            )
        index = int(reply[1]) - 1
        scope = SCOPES[index]
        return BudgetRefusal(
            scope=scope,
            name=(tenant, batch)[index],
            cap_pusd=_int(reply[2]),
            spent_pusd=_int(reply[3]),
            reserved_pusd=_int(reply[4]),
            amount_pusd=amount_pusd,
        )

    async def settle(self, reservation: Reservation, actual_pusd: int) -> bool:
        """Charge ``actual_pusd`` and free the reservation. False if this token was already closed."""
        if actual_pusd < 0:
            raise ValueError("actual_pusd must be >= 0")
        r = reservation
        reply = await self._scripts["budget_settle"](
            keys=self._keys(r.tenant, r.batch), args=[str(actual_pusd), r.token, self._ttl_ms]
        )
        return as_text(reply[0]) == "ok"

    def settle_into(self, batch: WriteBatch, reservation: Reservation, actual_pusd: int) -> None:
        """:meth:`settle` queued in ``batch`` (idempotent per token, so a re-sent batch settles once)."""
        if actual_pusd < 0:
            raise ValueError("actual_pusd must be >= 0")
        r = reservation
        batch.script(
            self._scripts["budget_settle"],
            self._keys(r.tenant, r.batch),
            [str(actual_pusd), r.token, self._ttl_ms],
        )

    def spend_entry(
        self, reservation: Reservation, actual_pusd: int
    ) -> tuple[list[tuple[str, str, int]], list[tuple[str, int]]]:
        """An unheld reservation's settle as increments (``worker/fleet/aggregates.py``): the spend on
        both scopes, the batch's budget ageing out as :meth:`settle` makes it. Counted once by the
        caller's once-only write (the attempt's), so no token is kept."""
        if actual_pusd < 0:
            raise ValueError("actual_pusd must be >= 0")
        tenant, batch, _ = self._keys(reservation.tenant, reservation.batch)
        incs = [(tenant, "spent", actual_pusd), (batch, "spent", actual_pusd)] if actual_pusd else []
        return incs, [(batch, int(self._ttl_ms))]

    async def release(self, reservation: Reservation) -> bool:
        """Free the reservation without cost. False if already settled/released or never reserved."""
        r = reservation
        if not r.held:
            return True
        reply = await self._scripts["budget_release"](
            keys=self._keys(r.tenant, r.batch), args=[r.token, self._ttl_ms]
        )
        return as_text(reply[0]) == "ok"
