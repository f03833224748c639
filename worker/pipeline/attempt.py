"""What one attempt holds while it runs, and the one place it lets go of it.

An attempt may hold a cache-warming lead (other jobs wait for this one to write a prefix), a slot on a
tier (a fleet-wide lease) and a budget reservation, taken in that order. Whatever ends the attempt
(an answer, a failed call, parking, a budget refusal, cancellation) ends the scope, which gives back
what is still held: :meth:`AttemptScope.settle_into` after a paid answer (usage known: the slot at once,
the rest with the attempt's record), :meth:`AttemptScope.release` otherwise (nothing paid, reservations
undone).
"""

from __future__ import annotations

from types import TracebackType

from redis.exceptions import RedisError

from jobs.results import Cost
from worker.fleet.admission import Admission
from worker.fleet.budget import Reservation
from worker.fleet.cache_warmer import WarmDecision
from worker.fleet.redis_scripts import WriteBatch
from worker.pipeline.call import CallResult
from worker.policy import cache_layout
from worker.runtime import Runtime


class AttemptScope:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.leader: WarmDecision | None = None
        self.admission: Admission | None = None
        self.reservation: Reservation | None = None
        self.wait_ms = 0
        # An uncapped call's spend, counted with the attempt's write (Store.save_attempt_into).
        self.spend: tuple[list[tuple[str, str, int]], list[tuple[str, int]]] | None = None

    def admitted(self, admission: Admission) -> None:
        self.admission = admission
        self.wait_ms = int(admission.wait_ms)

    async def release(self) -> None:
        """Give back whatever is still held, as if no call was made (no-op once settled)."""
        admission, reservation, leader = self.admission, self.reservation, self.leader
        self.admission = self.reservation = self.leader = None
        if admission is not None:
            await admission.release(0, 0, 0)
        if reservation is not None:
            await self.rt.budgets.release(reservation)
        if leader is not None:
            # a lead that wrote nothing must not keep followers waiting for it
            await self.rt.warmer.abandon(leader.prefix_hash, token=leader.token)

    async def settle_into(
        self,
        writes: WriteBatch,
        res: CallResult,
        cost: Cost,
        plan: cache_layout.RequestPlan,
        ttl: cache_layout.Ttl | None,
    ) -> None:
        """After a paid answer: free the slot with its real usage at once, then settle the budget and mark
        the cache, queued in ``writes`` to go with the attempt's record in one round trip."""
        admission, reservation, leader = self.admission, self.reservation, self.leader
        self.admission = self.reservation = self.leader = None
        if admission is not None:
            # The API let go of the request when its answer arrived: the next in line gets the slot now,
            # not after this answer's checks and record (a few ms of every call's slot on a busy worker).
            freed = WriteBatch(self.rt.redis)
            admission.release_usage_into(freed, res.usage)
            self.rt.gate.answered_into(freed, admission.tier)
            try:
                await freed.execute()
            except (RedisError, OSError):
                writes.take(freed)  # sent with the record, which is retried through a Redis outage
        if reservation is not None:
            if not reservation.held and self.rt.store.pending is not None:
                self.spend = self.rt.budgets.spend_entry(reservation, cost.total_pusd)
            else:
                self.rt.budgets.settle_into(writes, reservation, cost.total_pusd)
        used_cache = bool(res.usage.cache_write_tokens or res.usage.cache_read_tokens)
        if ttl and plan.warm_hash and (used_cache or leader is not None):
            # Leader or not: mirror the API's TTL refresh on every use of the prefix. A leader whose
            # answer cached nothing (the API's real count or minimum differs from our estimate) marks it
            # too: nothing is there to wait for, and handing the lead on would serialise every follower
            # behind one full call each.
            self.rt.warmer.mark_warm_into(
                writes,
                plan.warm_hash,
                cache_layout.TTL_SECONDS[ttl],
                token=leader.token if leader else None,
                age_s=res.latency_ms / 1000.0,
            )
        elif leader is not None:
            await self.rt.warmer.abandon(leader.prefix_hash, token=leader.token)

    async def __aenter__(self) -> AttemptScope:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()
