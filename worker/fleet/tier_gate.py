"""Fleet-wide per-tier limits on one shared Redis: concurrency leases, token buckets, cooldowns.

arq's ``max_jobs`` is per process; these limits hold across every worker process on every machine.
All state lives in Redis and every decision is one Lua script, timed by Redis ``TIME`` (never a worker
clock), so skewed or crashed workers cannot break a limit:

* **Leases** (``Keys.leases(tier)``): sorted set lease id -> deadline ms. A holder renews every ttl/3;
  a holder that dies stops renewing and its slot is reaped by the next acquire after the TTL.
* **Token buckets** (``Keys.bucket(tier, kind)``, kind rpm|itpm|otpm): continuous refill, capacity =
  the per-minute limit. Admission reserves estimates; release settles with actual usage (the
  difference is refunded or charged). Cache reads do not count toward itpm, as on the API.
* **Cooldown** (``Keys.cooldown(tier)``, its end also in the runtime config hash, so admissions read it
  with the limits): set after a 429/529 for everyone; never shortened. After a
  connection error or timeout it grows along the outage schedule (``Keys.outage(tier)`` counts the steps).
* **Runtime limits** (``Keys.limits_config``, fields ``"<tier>:<kind>"``) overlay ``Settings.limits``;
  the scripts read them on every call, so a change applies to the very next admission.

**The line** (``Keys.line(tier)``): a job that must wait joins one fleet-wide first-come-first-served
line; its place (one zset member) carries what it asks of the buckets. A release hands the freed slot
straight to the first waiter in the same script (cooldown and buckets checked for it) and publishes
``grant:<tier>:<lease id>`` on the waiter's process's own ``Keys.grants_channel`` (the releasing process's
own waiters learn it from the script's reply); that process starts the call without asking again. So a
saturated tier costs one script per job to join the line and one to release, instead of every waiting
process retrying on every release (the fleet's main CPU cost before), and no process's waiters can starve
another's. Newcomers (the intake's try-once) are refused while anyone waits. A place is held like a
lease: a dead process's places go with its leases when the reaper takes it out (seconds), and a slot
granted to a waiter its process no longer has (it gave up and its withdrawal failed) is handed on at once.
Waiters still re-try, every ``line_poll_s`` when waiting for a slot and every ``max_poll_s`` when waiting
for a token bucket to refill (no event says so): that picks up a grant whose event was lost, re-joins a
line Redis lost, and takes slots freed by expiry or the reaper.
Limit changes are published too and wake every waiter.

**Local handover** (``handover.py``): a slot freed in a process with a waiter of its own for the tier goes
straight to that waiter (the lease stays held, renewed for it) when the waiter joined the line at most
``local_handover_slack_ms`` after the line's first waiter, as the last reply from Redis told it, and that
reply said the tier has no rate limit, no cooldown and no more holders than its limit. The script that
follows (``lease_handover.lua``) takes the waiter's place out of the line. It saves the two hops between
processes of a grant through the line, and keeps the line first come, first served to within the slack.

Usage by the pipeline::

    gate = TierGate(redis, settings.keys, settings, owner=worker_id)
    await gate.start()                       # once per process
    adm = await gate.admit(tier, est_input_tokens=n_in, est_output_tokens=max_tokens)
    try:
        response = await call(...)           # if adm.lost.is_set() the fleet limit was not held
    except BaseException:
        await adm.abandon()                  # keeps the reservation as charged
        raise
    await adm.release_usage(usage)           # or adm.release(input, output, cache_read, cache_write)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from jobs.connections import as_text
from jobs.keys import Keys
from jobs.settings import Settings
from jobs.tiers import Tier
from worker.fleet.admission import Admission, AdmissionTimeout, Reason, Refusal
from worker.fleet.handover import LineView, heir
from worker.fleet.limit_config import RATE_KINDS, _arg
from worker.fleet.redis_scripts import Scripts, WriteBatch

log = logging.getLogger(__name__)


def new_lease_id(owner: str) -> str:
    """A lease (and line place) id of this process: ``<owner>:<nonce>``."""
    return f"{owner}:{uuid.uuid4().hex[:16]}"


def line_member(lease_id: str, est_in: int, est_out: int) -> str:
    """A waiter's place in the line (``limits_lib.lua``'s ``line_member``)."""
    return f"{lease_id}|{est_in}|{est_out}"


def lease_id_prefix(owner: str) -> str:
    """What every lease id of ``owner`` starts with: the reaper frees a dead owner's slots by it
    (``recovery_reap.lua``)."""
    return owner + ":"


def _resolve(fut: asyncio.Future[str], value: str) -> None:
    if not fut.done():
        fut.set_result(value)


def _lost(adm: Admission) -> None:
    log.warning("lease %s on %s was lost (reaped); the call runs over the limit", adm.lease_id, adm.tier)
    adm.lost.set()


@dataclass(eq=False)
class _Waiter:
    """An ``admit`` call waiting in the line; ``wake`` resolves to "grant" (the slot is ours), "retry" (an
    event says try again) or "timeout" (its pause is over)."""

    tier: Tier
    lease_id: str
    est_input_tokens: int
    est_output_tokens: int
    wake: asyncio.Future[str]
    joined_ms: int | None = None  # its place's score in the line (Redis time), once a reply told it
    parked: bool = False  # awaiting ``wake`` (not inside a script, whose grant it would miss)
    handed: str | None = None  # the lease a local handover gave it (None: granted under its own id)

    @property
    def member(self) -> str:
        return line_member(self.lease_id, self.est_input_tokens, self.est_output_tokens)


class TierGate:
    """Admission to tiers under the fleet-wide limits. One per process (one pubsub connection).

    ``try_admit`` never waits (the intake queue's try-once); ``admit`` waits in the tier's line, woken by a
    grant (a release handed it the slot) or a limit change, re-trying now and then (see the module doc).
    Without :meth:`start` it still works, by polling only.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: Settings,
        owner: str,
        lease_ttl_s: float | None = None,
        max_poll_s: float = 0.5,
        line_poll_s: float = 1.5,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.owner = owner
        self.lease_ttl_s = lease_ttl_s if lease_ttl_s is not None else settings.lease_ttl_s
        self.max_poll_s = max_poll_s
        # Waiting for a slot (concurrency, or others ahead): a release hands it over, so poll slowly.
        # Waiters are handed their slot by a release, so their polls are only a safety net: 84 waiters
        # polling every 0.5 s were ~1.4 scripts per job in bench/limits. A cooldown's end is known exactly
        # and publishes nothing, so waiters sleep until then (in steps of at most line_poll_s).
        self.line_poll_s = max(line_poll_s, max_poll_s)
        self._scripts = Scripts(redis, lib="limits_lib")
        # This process's waiters in the line, by lease id (the id the slot is granted under).
        self._waiting: dict[str, _Waiter] = {}
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._held: set[Admission] = set()
        self._handing_back: set[asyncio.Task[None]] = set()
        self._in_outage: set[Tier] = set()  # tiers whose outage streak this process advanced
        self._views = {t: LineView() for t in Tier}
        self._handover_slack_ms = settings.local_handover_slack_ms if settings.local_handover else None
        self.handovers = {t: 0 for t in Tier}  # slots handed to this process's own waiters, by tier

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.lease_ttl_s * 1000))

    def _bucket_keys(self, tier: Tier) -> list[str]:
        return [self.keys.bucket(tier, kind) for kind in RATE_KINDS]

    def waiting(self, tier: Tier) -> int:
        """Jobs of this process waiting in the tier's line (then the tier is saturated fleet-wide)."""
        return sum(1 for w in self._waiting.values() if w.tier == tier)

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._listener is not None:
            return
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.keys.limits_channel, self.keys.grants_channel(self.owner))
        self._listener = asyncio.create_task(self._listen(), name="routeq-limits-listener")

    async def close(self) -> None:
        """Stop listening and release (abandon) anything still held."""
        self._handover_slack_ms = None
        for adm in list(self._held):
            with contextlib.suppress(RedisError):
                await adm.abandon()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._handing_back:
            # A slot on its way to the next in line would otherwise stay held until its lease expires.
            await asyncio.gather(*self._handing_back, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None

    async def _listen(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except RedisError as e:
                # get_message reconnects and resubscribes on the next call; grants may have been missed
                # meanwhile, so every waiter re-tries (a granted one learns it from the script).
                log.warning("limits channel error: %s", e)
                self._wake(None)
                await asyncio.sleep(0.5)
                continue
            if msg is None or msg.get("type") != "message":
                continue
            event, _, rest = as_text(msg["data"]).partition(":")
            tier, _, lease_id = rest.partition(":")
            if event == "grant":
                self._granted(tier, lease_id)
            elif tier in Tier.__members__ and event in ("limits", "cooldown"):
                self._views[Tier(tier)].close(time.monotonic())
                if event == "limits":
                    self._wake(Tier(tier))  # a limit change may let waiters in
            elif tier in Tier.__members__:
                self._wake(Tier(tier))  # a slot freed that no waiter could take
            else:
                self._wake(None)

    def _granted(self, tier: str, lease_id: str) -> None:
        w = self._waiting.get(lease_id)
        if w is not None and w.handed is None:
            if not w.wake.done():
                w.wake.set_result("grant")
        elif tier in Tier.__members__ and not any(a.lease_id == lease_id for a in self._held):
            # Granted to a waiter this process no longer has (it gave up and its withdrawal failed): the
            # slot goes on to the next in line rather than waiting for the lease to expire.
            task = asyncio.create_task(self._hand_back(Tier(tier), lease_id), name="routeq-hand-back")
            self._handing_back.add(task)
            task.add_done_callback(self._handing_back.discard)

    async def _hand_back(self, tier: Tier, lease_id: str) -> None:
        batch = WriteBatch(self.redis)
        self._queue_release(batch, tier, lease_id, (0, 0, 0), False)
        try:
            await batch.execute()
        except RedisError as e:  # the lease expires after its TTL instead
            log.warning("cannot hand back lease %s granted to a waiter that left: %s", lease_id, e)

    def _wake(self, tier: Tier | None) -> None:
        for w in self._waiting.values():
            if (tier is None or w.tier == tier) and not w.wake.done():
                w.wake.set_result("retry")

    # --- admission --------------------------------------------------------------------------------

    async def try_admit(
        self, tier: Tier, est_input_tokens: int, est_output_tokens: int
    ) -> Admission | Refusal:
        """One atomic attempt for a newcomer: cooldown, a lease, and the rpm/itpm/otpm reservation, or a
        Refusal. ``est_input_tokens`` should count what the API counts toward itpm: uncached input plus
        cache writes (an over-estimate is refunded on release). Refused without asking Redis while this
        process has jobs waiting for the tier: they are ahead in the line."""
        tier = Tier(tier)
        if self.waiting(tier):
            return Refusal(tier, "queued", self.max_poll_s, 0, self.settings.tier_limits(tier).concurrency)
        lease_id = new_lease_id(self.owner)
        got, _ = await self._acquire(tier, lease_id, est_input_tokens, est_output_tokens, in_line=False)
        return got

    async def _acquire(
        self,
        tier: Tier,
        lease_id: str,
        est_in: int,
        est_out: int,
        in_line: bool,
        join_below: int = 0,
        waiter: _Waiter | None = None,
    ) -> tuple[Admission | Refusal, bool]:
        """One admission script; also True when a newcomer (``join_below`` > 0) joined the line. A
        ``waiter`` left in the line learns when it joined."""
        lim = self.settings.tier_limits(tier)
        k = self.keys
        est_in, est_out = max(0, est_in), max(0, est_out)
        asked_at = time.monotonic()
        res = await self._scripts.run(
            "lease_acquire",
            [k.leases(tier), k.cooldown(tier), k.limits_config, *self._bucket_keys(tier), k.line(tier)],
            [
                str(tier), lease_id, self._ttl_ms,
                lim.concurrency, _arg(lim.rpm), _arg(lim.itpm), _arg(lim.otpm),
                1, est_in, est_out, 1 if in_line else 0, join_below,
            ],
        )  # fmt: skip
        granted, reason, retry_ms, holders, limit = (
            int(res[0]), as_text(res[1]), int(res[2]), int(res[3]), int(res[4])
        )  # fmt: skip
        joined = len(res) > 5 and int(res[5]) == 1
        if len(res) > 8:
            if waiter is not None and int(res[6]) >= 0:
                waiter.joined_ms = int(res[6])
            self._views[tier].heard(int(res[7]), int(res[8]), asked_at)
        if not granted:
            limit_or_none = None if limit < 0 else limit
            return Refusal(tier, cast(Reason, reason), retry_ms / 1000, holders, limit_or_none), joined
        return self._hold(tier, lease_id, holders, est_in, est_out), False

    def _hold(self, tier: Tier, lease_id: str, holders: int, est_in: int, est_out: int) -> Admission:
        adm = Admission(tier, lease_id, holders, est_in, est_out)
        adm._gate = self
        adm._renewer = asyncio.create_task(self._renew(adm), name=f"routeq-lease-{lease_id}")
        self._held.add(adm)
        return adm

    async def admit(
        self, tier: Tier, est_input_tokens: int, est_output_tokens: int, timeout_s: float | None = None
    ) -> Admission:
        """Wait for admission in the tier's line; the Admission records ``wait_ms`` and ``waited_on``
        (reasons seen, in order). Raises :class:`AdmissionTimeout` after ``timeout_s``."""
        got = await self._wait(Tier(tier), est_input_tokens, est_output_tokens, timeout_s, join_below=0)
        assert isinstance(got, Admission)
        return got

    async def try_admit_or_wait(
        self,
        tier: Tier,
        est_input_tokens: int,
        est_output_tokens: int,
        line_below: int,
        timeout_s: float | None = None,
    ) -> Admission | Refusal:
        """A newcomer's try (as :meth:`try_admit`) that, refused only for want of a slot while fewer than
        ``line_below`` wait in the tier's line fleet-wide, joins the line's tail in the same script and
        waits there as :meth:`admit` does: a release hands it the next slot within milliseconds. Refused
        otherwise (a cooldown, a bucket, a long line), without waiting."""
        tier = Tier(tier)
        if line_below <= 0 or self.waiting(tier) >= line_below:
            return await self.try_admit(tier, est_input_tokens, est_output_tokens)
        return await self._wait(tier, est_input_tokens, est_output_tokens, timeout_s, join_below=line_below)

    async def _wait(
        self,
        tier: Tier,
        est_input_tokens: int,
        est_output_tokens: int,
        timeout_s: float | None,
        join_below: int,
    ) -> Admission | Refusal:
        start = time.monotonic()
        deadline = None if timeout_s is None else start + timeout_s
        waited_on: list[Reason] = []
        loop = asyncio.get_running_loop()
        est_in, est_out = max(0, est_input_tokens), max(0, est_output_tokens)
        w = _Waiter(tier, new_lease_id(self.owner), est_in, est_out, loop.create_future())
        self._waiting[w.lease_id] = w
        got: Admission | Refusal | None = None
        in_line = True  # until a newcomer's try says it did not join (a cancelled try may have joined)
        try:
            while True:
                if w.wake.done() and w.wake.result() == "grant":
                    got = self._hold(tier, w.handed or w.lease_id, 0, est_in, est_out)
                else:
                    w.wake = loop.create_future()  # a grant during the try below is seen by the script
                    got, joined = await self._acquire(
                        tier, w.lease_id, est_in, est_out, in_line=True, join_below=join_below, waiter=w
                    )
                    if join_below and isinstance(got, Refusal):
                        if not joined:
                            in_line = False
                            return got  # not worth waiting for: the caller goes elsewhere
                        join_below = 0  # in the line now: its next tries are a waiter's
                if isinstance(got, Admission):
                    got.wait_ms = (time.monotonic() - start) * 1000
                    got.waited_on = tuple(waited_on)
                    return got
                if got.reason not in waited_on:
                    waited_on.append(got.reason)
                pause = min(got.retry_in_s, self._poll_for(got.reason))
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AdmissionTimeout(tier, time.monotonic() - start, got)
                    pause = min(pause, left)
                if not w.wake.done():
                    # The wake future itself, with a timer that resolves it: a grant reaches this task in
                    # one turn of the event loop, where wait_for(shield(...)) took three (each a few ms
                    # on a busy worker, while the granted slot sits idle).
                    timer = loop.call_later(max(pause, 0.001), _resolve, w.wake, "timeout")
                    w.parked = True
                    try:
                        await w.wake
                    finally:
                        w.parked = False
                        timer.cancel()
        finally:
            del self._waiting[w.lease_id]
            if in_line and not isinstance(got, Admission):
                # Gave up (timeout, cancelled, Redis error): leave the line, and hand on a slot granted
                # to us meanwhile. Shielded: a cancelled waiter must still not strand a slot.
                with contextlib.suppress(RedisError):
                    await asyncio.shield(self._withdraw(w))

    async def cooldown(self, tier: Tier, seconds: float, reason: str) -> float:
        """Pause the tier fleet-wide for ``seconds`` (never shortening a longer running cooldown).
        Returns the cooldown now remaining, in seconds."""
        tier = Tier(tier)
        ms = max(1, math.ceil(seconds * 1000))
        self._views[tier].close(time.monotonic())
        left = await self._scripts.run(
            "limits_cooldown",
            [self.keys.cooldown(tier), self.keys.limits_config],
            [ms, reason, str(tier), self.keys.limits_channel],
        )
        log.info("tier %s cooling down %.2fs: %s", tier, seconds, reason)
        return int(left) / 1000

    async def outage(
        self, tier: Tier, reason: str, schedule_s: Sequence[float], streak_reset_s: float
    ) -> tuple[float, int]:
        """The API is unreachable from this tier: pause it fleet-wide for the next step of ``schedule_s``
        (a streak of failed probes that sees none for ``streak_reset_s`` starts again at the first).

        Returns (cooldown remaining in seconds, failed probes so far in this outage)."""
        tier = Tier(tier)
        steps = [max(1, math.ceil(s * 1000)) for s in schedule_s]
        reset_ms = math.ceil(streak_reset_s * 1000)
        self._views[tier].close(time.monotonic())
        left, streak = await self._scripts.run(
            "limits_outage",
            [self.keys.cooldown(tier), self.keys.outage(tier), self.keys.limits_config],
            [reason, reset_ms, str(tier), self.keys.limits_channel, *steps],
        )
        self._in_outage.add(tier)
        return int(left) / 1000, int(streak)

    def answered_into(self, batch: WriteBatch, tier: Tier) -> None:
        """A call to ``tier`` was answered. After an outage step this process saw, end the streak (queued
        with the call's other writes): sporadic timeouts between answers must not climb to long pauses."""
        if tier in self._in_outage:
            self._in_outage.discard(tier)
            batch.script(self._scripts["limits_outage_end"], [self.keys.outage(tier)], [])

    async def cooldown_remaining(self, tier: Tier) -> float:
        return max(0, int(await self.redis.pttl(self.keys.cooldown(Tier(tier))))) / 1000

    # --- holding ----------------------------------------------------------------------------------

    async def _renew(self, adm: Admission) -> None:
        every = self.lease_ttl_s / 3
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(every)
            try:
                ok = int(
                    await self._scripts.run(
                        "lease_renew", [self.keys.leases(adm.tier)], [adm.lease_id, self._ttl_ms]
                    )
                )
            except RedisError as e:
                log.warning("lease %s renewal failed: %s", adm.lease_id, e)
                if time.monotonic() - last_ok < self.lease_ttl_s:
                    continue
                ok = 0  # unrenewed past its TTL: others may have reaped it
            if not ok:
                _lost(adm)
                return
            last_ok = time.monotonic()

    def _release_into(self, batch: WriteBatch, adm: Admission, itpm_used: int, otpm_used: int) -> None:
        self._held.discard(adm)
        deltas = (0, itpm_used - adm.est_input_tokens, otpm_used - adm.est_output_tokens)
        w = self._heir(adm)
        if w is None:
            self._queue_release(batch, adm.tier, adm.lease_id, deltas, False)
        else:
            self._hand_over(batch, adm, w, deltas)

    def _heir(self, adm: Admission) -> _Waiter | None:
        """A waiter of ours to hand ``adm``'s slot to (handover.py), or None: the slot goes to the line."""
        if self._handover_slack_ms is None or adm.lost.is_set():
            return None
        ready = (
            (w.joined_ms, w)
            for w in self._waiting.values()
            if w.tier == adm.tier and w.parked and w.joined_ms is not None and not w.wake.done()
        )
        return heir(self._views[adm.tier], ready, self._handover_slack_ms)

    def _hand_over(self, batch: WriteBatch, adm: Admission, w: _Waiter, deltas: tuple[int, int, int]) -> None:
        """Give ``adm``'s lease to waiter ``w``, which starts its call now; queue the script that takes its
        place out of the line, renews the lease and settles the buckets (``lease_handover.lua``)."""
        w.handed = adm.lease_id
        w.wake.set_result("grant")
        self.handovers[adm.tier] += 1
        k, tier = self.keys, adm.tier
        lim = self.settings.tier_limits(tier)
        asks = (1, w.est_input_tokens, w.est_output_tokens)
        asked_at = time.monotonic()
        batch.script(
            self._scripts["lease_handover"],
            [k.leases(tier), k.limits_config, *self._bucket_keys(tier), k.line(tier)],
            [
                adm.lease_id, w.member, str(tier), _arg(lim.rpm), _arg(lim.itpm), _arg(lim.otpm),
                *(d + a for d, a in zip(deltas, asks, strict=True)), lim.concurrency, self._ttl_ms,
            ],
            then=lambda reply: self._on_handed(tier, adm.lease_id, asked_at, reply),
        )  # fmt: skip

    def _on_handed(self, tier: Tier, lease_id: str, asked_at: float, reply: Any) -> None:
        self._views[tier].heard(int(reply[1]), int(reply[2]), asked_at)
        if int(reply[0]) == 0:
            for adm in self._held:
                if adm.lease_id == lease_id and not adm.lost.is_set():
                    _lost(adm)

    def _poll_for(self, reason: Reason) -> float:
        if reason in ("cooldown", "concurrency", "queued"):
            return self.line_poll_s
        return self.max_poll_s  # a bucket refills without an event

    async def _withdraw(self, w: _Waiter) -> None:
        batch = WriteBatch(self.redis)
        deltas = (-1, -w.est_input_tokens, -w.est_output_tokens)
        self._queue_release(batch, w.tier, w.lease_id, deltas, True, w.member)
        if w.handed is not None:  # handed a slot it never took up: it goes on through the line
            self._queue_release(batch, w.tier, w.handed, deltas, False)
        await batch.execute()

    def _queue_release(
        self,
        batch: WriteBatch,
        tier: Tier,
        lease_id: str,
        deltas: tuple[int, int, int],
        withdraw: bool,
        member: str = "",
    ) -> None:
        """Settle, free the lease and hand the slot to the first waiter, in one script."""
        k = self.keys
        lim = self.settings.tier_limits(tier)
        asked_at = time.monotonic()
        batch.script(
            self._scripts["lease_settle_release"],
            [k.leases(tier), k.limits_config, *self._bucket_keys(tier), k.cooldown(tier), k.line(tier)],
            [
                lease_id, k.limits_channel, str(tier),
                _arg(lim.rpm), _arg(lim.itpm), _arg(lim.otpm), *deltas,
                lim.concurrency, self._ttl_ms, "withdraw" if withdraw else "", k.grants_channel(""),
                member, self.owner,
            ],
            then=lambda reply: self._on_released(tier, asked_at, reply),
        )  # fmt: skip

    def _on_released(self, tier: Tier, asked_at: float, reply: Any) -> None:
        if len(reply) > 3:
            self._views[tier].heard(int(reply[2]), int(reply[3]), asked_at)
        granted = as_text(reply[1])
        if granted and granted.startswith(lease_id_prefix(self.owner)):
            self._granted(str(tier), granted)  # ours: no event is published for it

    async def in_flight(self, tier: Tier) -> int:
        """Leases currently held (expired ones excluded) on the tier, fleet-wide."""
        t = await self.redis.time()
        now_ms = int(t[0]) * 1000 + int(t[1]) // 1000
        return int(await self.redis.zcount(self.keys.leases(Tier(tier)), f"({now_ms}", "+inf"))
