"""Document content in Redis: stored once per batch by its SHA-256, read by the worker that sends it.

A 30 MB PDF shared by 50 jobs is one key (``Keys.batch_document``), not 50 copies in 50 job payloads;
it expires with the batch's other keys. The producer stores it before the jobs are visible to workers.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
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


class ContentCache:
    """A worker process's recently sent document content by (batch, ref, media type), bounded in
    characters: jobs sharing a document read it from Redis and encode it once per process, not per job."""

    def __init__(self, max_chars: int = 256 * 1024 * 1024) -> None:
        self.max_chars = max_chars
        self._items: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._chars = 0

    def get(self, key: tuple[str, str, str]) -> str | None:
        got = self._items.get(key)
        if got is not None:
            self._items.move_to_end(key)
        return got

    def put(self, key: tuple[str, str, str], value: str) -> None:
        if len(value) > self.max_chars or key in self._items:
            return
        self._items[key] = value
        self._chars += len(value)
        while self._chars > self.max_chars:
            _, old = self._items.popitem(last=False)
            self._chars -= len(old)


async def load_documents(
    redis: Redis,
    keys: Keys,
    batch: str,
    documents: Iterable[Document],
    cache: ContentCache | None = None,
) -> dict[str, str]:
    """The stored content of ``documents`` by ref, as the request sends it: text, or base64 for a PDF
    sent natively. Raises :class:`MissingDocument` naming the first document whose content is gone."""
    contents: dict[str, str] = {}
    missing: list[Document] = []
    for d in documents:
        if d.ref is None:
            continue
        got = cache.get((batch, d.ref, d.media_type)) if cache is not None else None
        if got is None:
            missing.append(d)
        else:
            contents[d.ref] = got
    if not missing:
        return contents
    blobs: list[bytes | None] = await aw(
        redis.mget([keys.batch_document(batch, d.ref or "") for d in missing])
    )
    for d, blob in zip(missing, blobs, strict=True):
        if blob is None:
            raise MissingDocument(d.name)
        ref = d.ref or ""
        value = base64.b64encode(blob).decode("ascii") if d.is_pdf else blob.decode("utf-8", "replace")
        contents[ref] = value
        if cache is not None:
            cache.put((batch, ref, d.media_type), value)
    return contents
