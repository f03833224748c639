"""One snapshot for every client: rebuilt at most once per tick, pushed to SSE subscribers by a single
producer loop that runs only while someone listens. A hundred open pages cost Redis what one does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import orjson
from redis.asyncio import Redis

from jobs.settings import Settings
from worker.web.reads import read_snapshot

log = logging.getLogger("routeq.web")

TICK_S = 1.5
# Jobs/s and ETAs are measured over this window of recent snapshots.
RATE_WINDOW_S = 30.0


class RateWindow:
    """Finished-job counts of recent snapshots -> jobs/s per batch and overall (key ``"*"``)."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, dict[str, int]]] = deque()

    def __call__(self, now: float, finished: dict[str, int]) -> dict[str, float]:
        sample = {**finished, "*": sum(finished.values())}
        self.samples.append((now, sample))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        t0, first = self.samples[0]
        dt = now - t0
        if dt <= 0:
            return {}
        return {b: max(0, n - first.get(b, 0)) / dt for b, n in sample.items()}


class Hub:
    def __init__(self, redis: Redis, settings: Settings, tick_s: float = TICK_S) -> None:
        self.redis = redis
        self.settings = settings
        self.tick_s = tick_s
        self.rates = RateWindow()
        self._rows: dict[str, tuple[Any, dict[str, Any]]] = {}
        self.latest: dict[str, Any] | None = None
        self.latest_json = b""
        self._built_at = 0.0
        self.builds = 0  # snapshots read from Redis so far (one per tick, however many clients)
        self._lock = asyncio.Lock()
        self._subscribers: set[asyncio.Queue[bytes]] = set()
        self._producer: asyncio.Task[None] | None = None

    async def snapshot(self) -> dict[str, Any]:
        """The current snapshot; rebuilt when older than a tick, once for all concurrent callers."""
        async with self._lock:
            if self.latest is None or time.monotonic() - self._built_at >= self.tick_s:
                self.latest = await read_snapshot(self.redis, self.settings, self.rates, self._rows)
                self.latest_json = orjson.dumps(self.latest)
                self._built_at = time.monotonic()
                self.builds += 1
            return self.latest

    def subscribe(self) -> asyncio.Queue[bytes]:
        q: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self._subscribers.add(q)
        if self._producer is None or self._producer.done():
            self._producer = asyncio.ensure_future(self._produce())
        return q

    def unsubscribe(self, q: asyncio.Queue[bytes]) -> None:
        self._subscribers.discard(q)

    async def _produce(self) -> None:
        while self._subscribers:
            started = time.monotonic()
            try:
                await self.snapshot()
            except Exception as e:  # Redis away for a moment: keep the stream, try next tick
                log.warning("ui snapshot failed: %s", type(e).__name__)
            else:
                for q in list(self._subscribers):
                    if q.full():  # a slow client gets the newest snapshot, never a backlog
                        with contextlib.suppress(asyncio.QueueEmpty):
                            q.get_nowait()
                    q.put_nowait(self.latest_json)
            await asyncio.sleep(max(0.0, self.tick_s - (time.monotonic() - started)))

    async def close(self) -> None:
        self._subscribers.clear()
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._producer
