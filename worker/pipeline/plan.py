"""Planning one request: the job's layout for a tier, the cache TTL, and what the batch tells about it.

The layout itself is pure (``worker/policy/cache_layout.py``); this reads what it needs from Redis once
per run: which of the job's documents other jobs of the batch share (only those are worth a cache write),
the stored
content of documents read from files, and how many jobs of the batch are still to come (the TTL choice).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from jobs.connections import aw
from jobs.contract import Job
from jobs.documents.store import load_documents
from jobs.tiers import Tier
from worker.policy import cache_layout
from worker.runtime import Runtime


class RequestPlanner:
    """Plans the requests of one job's run; ``cache_info`` says what the last plan cached, and why."""

    def __init__(self, rt: Runtime, job: Job, batch: str, today: dt.date) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.job = job
        self.batch = batch
        self.today = today
        self.cache_info: dict[str, Any] = {}
        self._unshared: frozenset[str] | None = None
        self._contents: dict[str, str] | None = None

    async def plan(self, tier: Tier) -> tuple[cache_layout.RequestPlan, cache_layout.Ttl | None]:
        """The request for ``tier`` and its cache TTL (None: nothing is cached). Raises
        ``MissingDocument`` when a document's stored content is gone."""
        s = self.settings
        model, spec = s.model_for(tier), s.spec_for(tier)
        ttl: cache_layout.Ttl | None = None
        if s.caching:
            ttl = "5m" if s.cache_ttl == "auto" else s.cache_ttl
        unshared = await self.unshared_documents()
        contents = await self.document_contents()
        plan = cache_layout.build_request(
            self.job, model, spec, ttl=ttl, caching=s.caching, unshared=unshared, contents=contents
        )
        if not plan.prefix_hashes:
            ttl = None
            self.cache_info = {"reason": plan.reason}  # why nothing is cached (e.g. below the minimum)
        elif s.cache_ttl == "auto":
            span_s, reuses = await self.expected_span(tier)
            chosen, why = cache_layout.choose_ttl(span_s, reuses, spec, self.today)
            if chosen != ttl:
                ttl = chosen
                plan = cache_layout.build_request(
                    self.job, model, spec, ttl=chosen, caching=True, unshared=unshared, contents=contents
                )
            self.cache_info = {"ttl": ttl, "ttl_reason": why}
        pdfs = [d for d in self.job.documents if d.mode is not None]
        if pdfs:
            # How each PDF is sent and why (native: page images, text: its text layer).
            self.cache_info["pdf"] = [
                {"name": d.name, "mode": d.mode, "pages": d.pages, "reason": d.mode_reason} for d in pdfs
            ]
        if plan.prefix_hashes:
            self.cache_info.update(
                {
                    "breakpoints": plan.breakpoints,
                    "prefix_tokens": plan.cached_prefix_tokens,
                    "reason": plan.reason,
                }
            )
        return plan, ttl

    async def unshared_documents(self) -> frozenset[str]:
        """Documents no other job of the batch carries (per the producer's counts): not worth a write."""
        if self._unshared is None:
            docs = self.job.documents
            if not (self.settings.caching and docs):
                self._unshared = frozenset()
            else:
                counts = await aw(
                    self.rt.redis.hmget(self.rt.keys.batch_docs(self.batch), [d.content_key for d in docs])
                )
                # No count at all (enqueued by an older producer): assume shared.
                self._unshared = frozenset(
                    d.content_key for d, n in zip(docs, counts, strict=True) if n is not None and int(n) <= 1
                )
        return self._unshared

    async def document_contents(self) -> dict[str, str]:
        """The job's stored document content, read once per run."""
        if self._contents is None:
            self._contents = await load_documents(
                self.rt.redis, self.rt.keys, self.batch, self.job.documents, self.rt.documents
            )
        return self._contents

    def document_texts(self) -> list[str]:
        """The text of the job's documents as sent (answer checks ground extractions and quotes in it);
        a PDF sent natively has no text here."""
        contents = self._contents or {}
        texts: list[str] = []
        for d in self.job.documents:
            if d.text is not None:
                texts.append(d.text)
            elif d.ref is not None and d.media_type != "application/pdf" and d.ref in contents:
                texts.append(contents[d.ref])
        return texts

    async def expected_span(self, tier: Tier) -> tuple[float, int]:
        """How long the rest of this batch will keep reusing a prefix: pending jobs over the tier's pace."""
        async with self.rt.redis.pipeline(transaction=False) as p:
            p.hget(self.rt.keys.batch_meta(self.batch), "enqueued")
            p.scard(self.rt.keys.batch_done(self.batch))
            enqueued, done = await p.execute()
        pending = max(0, int(enqueued or 0) - int(done))
        per_s = max(1.0, self.settings.tier_limits(tier).concurrency / 2.0)  # assume ~2 s a call
        return pending / per_s, pending
