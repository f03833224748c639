"""The producer: validate jobs, fix their ids, and enqueue them in bulk.

One Lua call per chunk writes arq's own job documents and queue entries, with per-batch dedup, so
100 000 jobs take a few hundred round trips instead of 100 000 WATCH/MULTI transactions.

One enqueue fills one batch of one tenant (docs/design.md, "Job identity"): the batch is the one
asked for, else the first job's ``tags.batch``, else a new id; its tenant is the one asked for, else
the first job's. A job naming another batch or tenant is rejected by line, as is a caller's ``id``
already taken in the batch by a job with other content. A batch owned by another tenant is refused.
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
from jobs.contract import Job, check_name
from jobs.documents.limits import MAX_PDF_BYTES, MAX_PDF_PAGES
from jobs.documents.store import MissingDocument, store_documents
from jobs.keys import ARQ_JOB_PREFIX, JOB_FUNCTION
from jobs.schedule import pin_deadline
from jobs.serialization import arq_job_payload
from jobs.settings import Settings
from jobs.tiers import TIER_ORDER, Tier

CHUNK = 500


def new_batch_id() -> str:
    return "b" + time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(3)


@dataclass
class EnqueueResult:
    batch: str
    read: int = 0  # items read from the input, good or bad
    enqueued: int = 0
    duplicates: int = 0
    rejected: list[str] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "batch": self.batch or None,  # None: no job was read, so no batch was named or made
            "enqueued": self.enqueued,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
        }


class TooLarge(ValueError):
    pass


class BatchRefused(ValueError):
    """The whole enqueue is refused (the batch belongs to another tenant); nothing was written."""


@dataclass(frozen=True, slots=True)
class Located:
    """A job and where it came from ("LINE" of a JSONL file, a folder document's relative path)."""

    where: str
    job: Job


@dataclass(frozen=True, slots=True)
class Pending:
    """A placed job waiting for its chunk's write."""

    where: str
    caller_id: str | None
    doc_keys: tuple[str, ...]
    wire: dict[str, Any]
    id_record: str  # "<content digest> <caller id>" for the batch's id hash, "" without a caller id


def _owner_message(batch: str, owner: str, tenant: str) -> str:
    return (
        f"batch {batch!r} belongs to tenant {owner!r}, not {tenant!r}: a batch has one tenant "
        "(use another --batch)"
    )


def largest_window(settings: Settings, low: Tier, high: Tier) -> tuple[int, Tier]:
    """The largest context window among the tiers a job may use, and its tier."""
    allowed = [t for t in TIER_ORDER if low.rank <= t.rank <= high.rank]
    best = max(allowed, key=lambda t: settings.spec_for(t).context_window)
    return settings.spec_for(best).context_window, best


def check_fits(job: Job, settings: Settings, window: tuple[int, Tier] | None = None) -> None:
    """Refuse a job no allowed tier's model can take (prompt + output over its context window, or more
    native PDF pages or bytes than one request may carry)."""
    pdfs = [d for d in job.documents if d.is_pdf]
    pages = sum(d.pages or 0 for d in pdfs)
    if pages > MAX_PDF_PAGES:
        raise TooLarge(f"native PDFs have {pages} pages together, over the API's {MAX_PDF_PAGES} per request")
    size_bytes = sum(len(d.payload) for d in pdfs if d.payload is not None)
    if size_bytes > MAX_PDF_BYTES:
        raise TooLarge(
            f"native PDFs are {size_bytes} bytes together, over the API's {MAX_PDF_BYTES} per request"
        )
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
        jobs: Iterable[Job | Located | Any],
        *,
        batch: str | None = None,
        tenant: str | None = None,
        on_progress: Callable[[int], None] | None = None,
        on_batch: Callable[[str], None] | None = None,
    ) -> EnqueueResult:
        """Enqueue the valid jobs; other items (e.g. ``sources.Rejected``) are counted as rejected.

        ``on_batch`` is called once with the batch id, as soon as it is known and before any write.
        Raises ValueError for an invalid ``batch``/``tenant`` name, BatchRefused for another's batch.
        """
        if batch is not None:
            check_name("batch", batch)
        if tenant is not None:
            check_name("tenant", tenant)
        result = EnqueueResult(batch=batch or "")
        owner: str | None = None
        with telemetry.enqueue_span(batch or "", 0, queue=self.keys.intake_queue, tenant=tenant) as span:
            # A chunk keeps each job's document keys, not the job: the job may carry file contents.
            chunk: list[Pending] = []
            windows: dict[tuple[Tier, Tier], tuple[int, Tier]] = {}
            stored: set[tuple[str, str]] = set()
            retention_ms = (self.settings.job_expiry_s + self.settings.result_ttl_s) * 1000
            seen = 0
            for item in jobs:
                seen += 1
                if isinstance(item, Located):
                    where, job = item.where, item.job
                    if job.document_source and job.document_source != where:
                        where = f"{where} ({job.document_source})"  # a JSONL line's file, by name
                elif isinstance(item, Job):
                    where, job = str(seen), item
                else:
                    result.rejected.append(str(item))
                    continue
                if owner is None:  # the first job: the batch and its tenant are now known
                    result.batch = result.batch or job.tags.batch or new_batch_id()
                    owner = tenant or job.tags.tenant
                    await self._check_owner(result.batch, owner)
                    span.set_attribute("routeq.batch", result.batch)
                    if on_batch:
                        on_batch(result.batch)
                if job.tags.batch is not None and job.tags.batch != result.batch:
                    result.rejected.append(
                        f"{where}: tags.batch {job.tags.batch!r} differs from this enqueue's batch "
                        f"{result.batch!r} (one enqueue fills one batch)"
                    )
                    continue
                given_tenant = job.tags.tenant if "tenant" in job.tags.model_fields_set else None
                if given_tenant is not None and given_tenant != owner:
                    result.rejected.append(
                        f"{where}: tags.tenant {given_tenant!r} differs from tenant {owner!r} of batch "
                        f"{result.batch!r} (a batch has one tenant)"
                    )
                    continue
                bounds = (job.constraints.low, job.constraints.high)
                if bounds not in windows:
                    windows[bounds] = largest_window(self.settings, *bounds)
                try:
                    check_fits(job, self.settings, windows[bounds])
                except TooLarge as e:
                    result.rejected.append(f"{where}: {e}")
                    continue
                try:
                    await store_documents(
                        self.redis, self.keys, result.batch, job.documents, retention_ms, stored
                    )
                except MissingDocument as e:
                    result.rejected.append(
                        f"{where}: document {e.name!r}: its content is not stored in the batch"
                    )
                    continue
                wire, digest = job.place(result.batch, owner)
                if job.constraints.deadline is not None:
                    # A duration counts from now; pinned here, where the job is accepted.
                    wire["constraints"]["deadline"] = pin_deadline(job.constraints.deadline, time.time())
                chunk.append(
                    Pending(
                        where,
                        job.id,
                        tuple(d.content_key for d in job.documents),
                        wire,
                        f"{digest} {job.id}" if job.id else "",
                    )
                )
                if len(chunk) >= CHUNK:
                    await self._flush(chunk, result, owner)
                    chunk = []
                    if on_progress:
                        on_progress(seen)
            if chunk:
                await self._flush(chunk, result, owner or "default")
            if on_progress:
                on_progress(seen)
            result.read = seen
            span.set_attribute("messaging.batch.message_count", result.enqueued)
            span.set_attribute("routeq.duplicates", result.duplicates)
            span.set_attribute("routeq.rejected", len(result.rejected))
        if result.rejected and result.batch:
            await aw(self.redis.hincrby(self.keys.batch_meta(result.batch), "rejected", len(result.rejected)))
        return result

    async def _check_owner(self, batch: str, tenant: str) -> None:
        raw: Any = await aw(self.redis.hget(self.keys.batch_meta(batch), "tenant"))
        owner = raw.decode() if isinstance(raw, bytes) else raw
        if owner is not None and owner != tenant:
            raise BatchRefused(_owner_message(batch, owner, tenant))

    async def _flush(self, chunk: list[Pending], result: EnqueueResult, tenant: str) -> None:
        now_ms = int(time.time() * 1000)
        argv: list[Any] = [
            ARQ_JOB_PREFIX,
            self.settings.job_expiry_s * 1000,
            now_ms,
            result.batch,
            (self.settings.job_expiry_s + self.settings.result_ttl_s) * 1000,
            tenant,
        ]
        with telemetry.chunk_span(result.batch, len(chunk), self.keys.intake_queue) as carrier:
            for p in chunk:
                if carrier:
                    p.wire["trace_context"] = carrier
                argv += [
                    p.wire["internal_id"],
                    p.id_record,
                    arq_job_payload(JOB_FUNCTION, [p.wire], {}, now_ms),
                ]
        keys = [
            self.keys.intake_queue,
            self.keys.batch_jobs(result.batch),
            self.keys.batch_meta(result.batch),
            self.keys.batches,
            self.keys.batch_ids(result.batch),
        ]
        flags = await self._enqueue_script()(keys=keys, args=argv)
        if flags and int(flags[0]) == -1:
            raise BatchRefused(_owner_message(result.batch, flags[1].decode(), tenant))
        shared: dict[str, int] = {}
        for p, flag in zip(chunk, flags, strict=True):
            if int(flag) == 1:
                result.enqueued += 1
                result.job_ids.append(p.wire["internal_id"])
                for k in p.doc_keys:
                    shared[k] = shared.get(k, 0) + 1
            elif int(flag) == 2:
                result.rejected.append(
                    f"{p.where}: id {p.caller_id} already used in this batch for another job"
                )
            else:
                result.duplicates += 1
        if shared:
            # Workers cache a document's prefix only when other jobs of the batch reuse it: a breakpoint
            # on a document no one else reads would pay the 1.25x write for nothing.
            docs_key = self.keys.batch_docs(result.batch)
            async with self.redis.pipeline(transaction=False) as pipe:
                for k, n in shared.items():
                    pipe.hincrby(docs_key, k, n)
                pipe.pexpire(docs_key, (self.settings.job_expiry_s + self.settings.result_ttl_s) * 1000)
                await pipe.execute()
