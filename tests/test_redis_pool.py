"""A worker's Redis pool checks connections out concurrently, against a real server.

redis-py 5.3's asyncio pool holds one lock across a checkout's readiness probe, an await: a busy process's
commands then wait for it one loop turn each (in bench/overhead, jobs held tier slots while they queued,
and the fleet's slots turned over at a third of their rate)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from jobs.connections import ConcurrentCheckoutPool, connect
from jobs.settings import Settings

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]


async def test_checkouts_do_not_wait_for_each_others_readiness_probe(redis_url: str) -> None:
    client = await connect(Settings(redis_url=redis_url))
    pool: Any = client.connection_pool
    try:
        assert isinstance(pool, ConcurrentCheckoutPool)
        probe = pool.ensure_connection

        async def slow_probe(connection: Any) -> None:
            await asyncio.sleep(0.2)  # a probe that takes a while: a new connection, a slow network
            await probe(connection)

        pool.ensure_connection = slow_probe
        t0 = time.monotonic()
        got = await asyncio.gather(*(pool.get_connection("PING") for _ in range(10)))
        elapsed = time.monotonic() - t0
        assert len({id(c) for c in got}) == 10  # each caller has its own connection
        assert elapsed < 1.0, f"10 checkouts took {elapsed:.2f}s: they queued behind one another"
        for c in got:
            await pool.release(c)
        del pool.ensure_connection
        # the pool still works as a pool: commands, a pipeline, connections reused
        assert await client.ping()
        async with client.pipeline(transaction=False) as p:
            p.set("routeq:test:pool", "1")
            p.get("routeq:test:pool")
            assert await p.execute() == [True, b"1"]
        assert len(pool._available_connections) >= 10
    finally:
        await client.aclose()
