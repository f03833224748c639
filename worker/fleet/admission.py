"""A held slot on a tier (``Admission``) and a refused try (``Refusal``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from jobs.results import Usage
from jobs.tiers import Tier
from worker.fleet.redis_scripts import WriteBatch

if TYPE_CHECKING:  # the gate hands out admissions; an admission only points back at it
    from worker.fleet.tier_gate import TierGate


log = logging.getLogger(__name__)

# "queued": a slot may be free, but jobs already wait for the tier and go first.
Reason = Literal["cooldown", "concurrency", "queued", "rpm", "itpm", "otpm"]


# --- admission ---------------------------------------------------------------------------------------


class AdmissionTimeout(TimeoutError):
    def __init__(self, tier: Tier, waited_s: float, last: Refusal | None) -> None:
        reason = last.reason if last else "unknown"
        super().__init__(f"no {tier} slot within {waited_s:.1f}s (last refusal: {reason})")
        self.tier = tier
        self.last = last


@dataclass(frozen=True, slots=True)
class Refusal:
    tier: Tier
    reason: Reason
    # When trying again may succeed: exact for cooldown and buckets; for concurrency the earliest lease
    # deadline (a release usually comes sooner, and is published).
    retry_in_s: float
    holders: int
    limit: int | None


@dataclass(eq=False)
class Admission:
    """A held slot on a tier. Call exactly one of :meth:`release`, :meth:`release_usage` or
    :meth:`abandon` (further calls are no-ops); as an async context manager, exit abandons if none
    was called. ``lost`` is set when a renewal found the lease reaped (the call then ran outside the
    fleet limit)."""

    tier: Tier
    lease_id: str
    holders: int
    est_input_tokens: int
    est_output_tokens: int
    wait_ms: float = 0.0
    waited_on: tuple[Reason, ...] = ()
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    _gate: TierGate | None = field(default=None, repr=False)
    _renewer: asyncio.Task[None] | None = field(default=None, repr=False)
    _released: bool = field(default=False, repr=False)

    @property
    def released(self) -> bool:
        return self._released

    async def release(
        self, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0, cache_write_tokens: int = 0
    ) -> None:
        """Settle the buckets with actual usage and free the slot. Token counts follow the API's usage:
        ``input_tokens`` is the uncached input; cache writes count toward itpm, cache reads do not."""
        del cache_read_tokens  # accepted for symmetry with the API usage; reads are free of itpm
        await self._finish(input_tokens + cache_write_tokens, output_tokens)

    async def release_usage(self, usage: Usage) -> None:
        await self.release(
            usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens
        )

    def release_usage_into(self, batch: WriteBatch, usage: Usage) -> None:
        """:meth:`release_usage` queued in ``batch``, with the other writes that end a call."""
        self._finish_into(batch, usage.input_tokens + usage.cache_write_tokens, usage.output_tokens)

    async def abandon(self) -> None:
        """Free the slot keeping the reservation charged (usage unknown, e.g. the call raised)."""
        await self._finish(self.est_input_tokens, self.est_output_tokens)

    def _finish_into(self, batch: WriteBatch | None, itpm_used: int, otpm_used: int) -> bool:
        """Mark released, stop renewing and queue the settle-and-release; False if released before."""
        if self._released:
            return False
        self._released = True
        if self._renewer is not None:
            self._renewer.cancel()
        if self._gate is not None and batch is not None:
            self._gate._release_into(batch, self, itpm_used, otpm_used)
        return True

    async def _finish(self, itpm_used: int, otpm_used: int) -> None:
        renewer = self._renewer
        batch = WriteBatch(self._gate.redis) if self._gate is not None else None
        if not self._finish_into(batch, itpm_used, otpm_used):
            return
        if renewer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        if batch is not None:
            await batch.execute()

    async def __aenter__(self) -> Admission:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.abandon()
