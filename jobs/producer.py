"""The producer: validate jobs, fix their ids, and enqueue them in bulk.

One Lua call per chunk writes arq's own job documents and queue entries, with per-batch dedup, so
100 000 jobs take a few hundred round trips instead of 100 000 WATCH/MULTI transactions.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from jobs import telemetry
from jobs.connections import aw
from jobs.contract import Job
from jobs.keys import ARQ_JOB_PREFIX, JOB_FUNCTION
from jobs.serialization import arq_job_payload
from jobs.settings import Settings
from jobs.tiers import TIER_ORDER, Tier

CHUNK = 500


def new_batch_id() -> str:
    return "b" + time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(3)


@dataclass
class EnqueueResult:
    batch: str
    enqueued: int = 0
    duplicates: int = 0
    rejected: list[str] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "enqueued": self.enqueued,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
        }


class TooLarge(ValueError):
    pass


def largest_window(settings: Settings, low: Tier, high: Tier) -> tuple[int, Tier]:
    """The largest context window among the tiers a job may use, and its tier."""
    allowed = [t for t in TIER_ORDER if low.rank <= t.rank <= high.rank]
    best = max(allowed, key=lambda t: settings.spec_for(t).context_window)
    return settings.spec_for(best).context_window, best


def check_fits(job: Job, settings: Settings, window: tuple[int, Tier] | None = None) -> None:
    """Refuse a job no allowed tier's model can take (prompt + output over its context window)."""
    size, best = window or largest_window(settings, job.constraints.low, job.constraints.high)
    need = job.estimated_input_tokens() + job.max_output_tokens
    if need > size:
        raise TooLarge(
            f"documents too large: ~{need} tokens (prompt + max_output_tokens) exceed the "
            f"{size}-token context window of {settings.model_for(best)} ({best.value})"
        )


class Producer:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = settings.keys
        self._script: AsyncScript | None = None

    def _enqueue_script(self) -> AsyncScript:
        if self._script is None:
            src = resources.files("jobs").joinpath("lua/enqueue.lua").read_text()
            self._script = self.redis.register_script(src)
        return self._script

    async def enqueue(
        self,
        jobs: Iterable[Job | Any],
        *,
        batch: str | None = None,
        tenant: str | None = None,
        on_progress: Callable[[int], None] | None = None,
        on_batch: Callable[[str], None] | None = None,
    ) -> EnqueueResult:
        """Enqueue the valid jobs; other items (e.g. ``sources.Rejected``) are counted as rejected.

        ``on_batch`` is called once with the batch id, as soon as it is known and before any write.
        """
        result = EnqueueResult(batch=batch or new_batch_id())
        if on_batch:
            on_batch(result.batch)
        with telemetry.enqueue_span(result.batch, 0, queue=self.keys.intake_queue, tenant=tenant) as span:
            chunk: list[tuple[Job, dict[str, Any]]] = []
            windows: dict[tuple[Tier, Tier], tuple[int, Tier]] = {}
            seen = 0
            for item in jobs:
                seen += 1
                if not isinstance(item, Job):
                    result.rejected.append(str(item))
                    continue
                bounds = (item.constraints.low, item.constraints.high)
                if bounds not in windows:
                    windows[bounds] = largest_window(self.settings, *bounds)
                try:
                    check_fits(item, self.settings, windows[bounds])
                except TooLarge as e:
                    result.rejected.append(f"{seen}: {e}")
                    continue
                chunk.append((item, item.placed_wire(result.batch, tenant)))
                if len(chunk) >= CHUNK:
                    await self._flush(chunk, result)
                    chunk = []
                    if on_progress:
                        on_progress(seen)
            if chunk:
                await self._flush(chunk, result)
            if on_progress:
                on_progress(seen)
            span.set_attribute("messaging.batch.message_count", result.enqueued)
            span.set_attribute("routeq.duplicates", result.duplicates)
            span.set_attribute("routeq.rejected", len(result.rejected))
        if result.rejected:
            await aw(self.redis.hincrby(self.keys.batch_meta(result.batch), "rejected", len(result.rejected)))
        return result

    async def _flush(self, chunk: list[tuple[Job, dict[str, Any]]], result: EnqueueResult) -> None:
        now_ms = int(time.time() * 1000)
        argv: list[Any] = [
            ARQ_JOB_PREFIX,
            self.settings.job_expiry_s * 1000,
            now_ms,
            result.batch,
            (self.settings.job_expiry_s + self.settings.result_ttl_s) * 1000,
        ]
        with telemetry.chunk_span(result.batch, len(chunk), self.keys.intake_queue) as carrier:
            for _, wire in chunk:
                if carrier:
                    wire["trace_context"] = carrier
                argv.append(wire["id"])
                argv.append(arq_job_payload(JOB_FUNCTION, [wire], {}, now_ms))
        keys = [
            self.keys.intake_queue,
            self.keys.batch_jobs(result.batch),
            self.keys.batch_meta(result.batch),
            self.keys.batches,
        ]
        flags = await self._enqueue_script()(keys=keys, args=argv)
        shared: dict[str, int] = {}
        for (job, wire), flag in zip(chunk, flags, strict=True):
            if int(flag):
                result.enqueued += 1
                result.job_ids.append(wire["id"])
                for d in job.documents:
                    shared[d.content_key] = shared.get(d.content_key, 0) + 1
            else:
                result.duplicates += 1
        if shared:
            # Workers cache a document's prefix only when other jobs of the batch reuse it: a breakpoint
            # on a document no one else reads would pay the 1.25x write for nothing.
            docs_key = self.keys.batch_docs(result.batch)
            async with self.redis.pipeline(transaction=False) as p:
                for k, n in shared.items():
                    p.hincrby(docs_key, k, n)
                p.pexpire(docs_key, (self.settings.job_expiry_s + self.settings.result_ttl_s) * 1000)
                await p.execute()
