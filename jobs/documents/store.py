"""Document content in Redis: stored once per batch by its SHA-256, read by the worker that sends it.

A 30 MB PDF shared by 50 jobs is one key (``Keys.batch_document``), not 50 copies in 50 job payloads;
it expires with the batch's other keys. The producer stores it before the jobs are visible to workers.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from redis.asyncio import Redis

from jobs.connections import aw
from jobs.contract import Document
from jobs.keys import Keys


class MissingDocument(LookupError):
    """A document's stored content is not in Redis (never stored, or the batch expired)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


async def store_documents(
    redis: Redis,
    keys: Keys,
    batch: str,
    documents: Iterable[Document],
    retention_ms: int,
    stored: set[tuple[str, str]],
) -> None:
    """Store each document's content once in ``batch``; ``stored`` remembers what this producer has
    stored already. Raises :class:`MissingDocument` for a ref with no content here nor in Redis."""
    for d in documents:
        if d.ref is None or (batch, d.ref) in stored:
            continue
        key = keys.batch_document(batch, d.ref)
        # Already there (an earlier enqueue into this batch): refresh its expiry, do not resend it.
        if not await aw(redis.pexpire(key, retention_ms)):
            if d.payload is None:
                raise MissingDocument(d.name)
            await aw(redis.set(key, d.payload, px=retention_ms))
        stored.add((batch, d.ref))


async def load_documents(
    redis: Redis, keys: Keys, batch: str, documents: Iterable[Document]
) -> dict[str, str]:
    """The stored content of ``documents`` by ref, as the request sends it: text, or base64 for a PDF
    sent natively. Raises :class:`MissingDocument` naming the first document whose content is gone."""
    docs = [d for d in documents if d.ref is not None]
    if not docs:
        return {}
    blobs: list[bytes | None] = await aw(redis.mget([keys.batch_document(batch, d.ref or "") for d in docs]))
    contents: dict[str, str] = {}
    for d, blob in zip(docs, blobs, strict=True):
        if blob is None:
            raise MissingDocument(d.name)
        contents[d.ref or ""] = (
            base64.b64encode(blob).decode("ascii") if d.is_pdf else blob.decode("utf-8", "replace")
        )
    return contents
