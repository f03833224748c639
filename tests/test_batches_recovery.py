"""The crash windows of Message Batches mode, each stopped exactly where a crash would stop it.

Real redis-server, the stand-in's Batches API in process (its clock under the test's control), the real
SDK, and routeq's own submit/poll/recover code; a "crash" is the protocol cut off at that step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from jobs.results import JobResult, RouteRecord
from jobs.settings import Settings
from jobs.sources import parse_job
from jobs.tiers import Tier
from tests.helpers import FakeClock
from worker.app import build_runtime
from worker.batches.gather import BatchItem, add, custom_id
from worker.batches.poll import ingest, poll_open
from worker.batches.submit import maybe_submit
from worker.fleet.redis_scripts import Scripts
from worker.runtime import Runtime
from worker.sandbox.mock_api import MockConfig, RunningServer, start_server

pytestmark = pytest.mark.integration
MODEL = "claude-haiku-4-5"


@pytest.fixture
async def env(redis_url: str) -> AsyncIterator[tuple[Runtime, RunningServer, FakeClock]]:
    clock = FakeClock()
    srv = await start_server(MockConfig(clock=clock, batch_latency_s=100.0))
    s = Settings(
        redis_url=redis_url,
        anthropic_base_url=srv.url,
        anthropic_api_key="k",
        batch_window_s=0,
        learned_router=False,
    )
    rt = await build_runtime(s)
    yield rt, srv, clock
    await rt.gate.close()
    await rt.client.close()
    await rt.redis.aclose()
    await srv.stop()


async def gathered(rt: Runtime, n: int, batch: str = "rb") -> list[BatchItem]:
    items = []
    for i in range(n):
        job = parse_job(
            {"task": "summarize", "prompt": f"Summarise {i}: it rained.", "constraints": {"mode": "batch"}}
        )
        job = job.with_ids(batch)
        params = {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": job.prompt}]}
        route = RouteRecord(tier=Tier.haiku, base_tier=Tier.haiku, score=0.0, reason="test")
        item = BatchItem(
            custom_id=custom_id(job.job_id, 1),
            job=job.to_wire(),
            tier=Tier.haiku,
            model=MODEL,
            n=1,
            params=params,
            ttl=None,
            route=route,
        )
        assert await add(rt, item, batch)
        items.append(item)
    return items


async def take_intent(rt: Runtime, sub: str) -> list[str]:
    """Step 1 of the protocol, then the process 'dies'; the intent is backdated past the lease."""
    k = rt.keys
    got = await Scripts(rt.redis)["batch_take"](
        keys=[
            k.batch_gather(MODEL),
            k.batch_items,
            k.batch_gather_bytes,
            k.api_batch(sub),
            k.api_batches_open,
            k.api_batches,
            k.batch_in_api_count,
        ],
        args=[100, 10**8, sub, MODEL, "dead-owner", 0],
    )
    await rt.redis.hincrby(k.api_batch(sub), "created_ms", -600_000)
    return [c.decode() for c in got[1:]]


async def stats(srv: RunningServer) -> dict[str, Any]:
    return srv.state.stats.to_json()["batches"]


async def result(rt: Runtime, job_id: str) -> JobResult | None:
    raw = await rt.redis.get(rt.keys.result(job_id))
    return None if raw is None else JobResult.model_validate_json(raw)


async def test_crash_before_create_resubmits_once(env: tuple[Runtime, RunningServer, FakeClock]) -> None:
    rt, srv, clock = env
    items = await gathered(rt, 3)
    cids = await take_intent(rt, "sub-a")
    assert sorted(cids) == sorted(i.custom_id for i in items)
    assert not await rt.redis.zcard(rt.keys.batch_gather(MODEL))
    await poll_open(rt, "w1")  # recovery: no batch at the API -> the requests gather again
    assert not await rt.redis.exists(rt.keys.api_batch("sub-a"))
    assert await rt.redis.zcard(rt.keys.batch_gather(MODEL)) == 3
    batch_id = await maybe_submit(rt, MODEL, "w1")
    assert batch_id is not None
    clock.now += 100
    await poll_open(rt, "w1")
    for i in items:
        r = await result(rt, i.job_id)
        assert r is not None and r.status == "done" and r.service_tier == "batch"
    st = await stats(srv)
    assert (st["created"], st["requests"], st["duplicate_requests"]) == (1, 3, 0)


async def test_crash_after_create_adopts_the_orphan_not_a_lookalike(
    env: tuple[Runtime, RunningServer, FakeClock],
) -> None:
    rt, srv, clock = env
    items = await gathered(rt, 2)
    cids = await take_intent(rt, "sub-b")
    by_id = {i.custom_id: i for i in items}
    # The create went out and made a batch; its answer never arrived. A lookalike of the same size too.
    orphan = await rt.client.messages.batches.create(
        requests=[{"custom_id": c, "params": by_id[c].params} for c in cids]  # type: ignore[misc]
    )
    decoy = await rt.client.messages.batches.create(
        requests=[{"custom_id": f"other-{n}", "params": items[0].params} for n in range(2)]  # type: ignore[misc]
    )
    await poll_open(rt, "w1")  # both still processing: wait, resubmit nothing
    h = await rt.redis.hgetall(rt.keys.api_batch("sub-b"))
    assert h[b"status"] == b"intent" and b"batch_id" not in h
    assert not await rt.redis.zcard(rt.keys.batch_gather(MODEL))
    clock.now += 100
    await poll_open(rt, "w1")  # both ended: matched by custom_ids, adopted
    assert (await rt.redis.hget(rt.keys.api_batch("sub-b"), "batch_id")).decode() == orphan.id != decoy.id
    await poll_open(rt, "w1")  # ingested like any batch
    for i in items:
        r = await result(rt, i.job_id)
        assert r is not None and r.status == "done"
    st = await stats(srv)
    assert (st["created"], st["requests"], st["duplicate_requests"]) == (2, 4, 0)


async def test_crash_during_ingestion_records_each_result_once(
    env: tuple[Runtime, RunningServer, FakeClock],
) -> None:
    rt, srv, clock = env
    items = await gathered(rt, 3)
    raws = {i.custom_id: await rt.redis.hget(rt.keys.batch_items, i.custom_id) for i in items}
    batch_id = await maybe_submit(rt, MODEL, "w1")
    assert batch_id is not None
    clock.now += 100
    await poll_open(rt, "w1")
    agg = await rt.redis.hgetall(rt.keys.batch_agg("rb"))
    before = {i.custom_id: await rt.redis.get(rt.keys.result(i.job_id)) for i in items}
    # A worker that died after recording but before dropping the request: another ingests it again.
    for cid, raw in raws.items():
        await rt.redis.hset(rt.keys.batch_items, cid, raw)
    assert await ingest(rt, batch_id) == 3
    assert await rt.redis.hgetall(rt.keys.batch_agg("rb")) == agg
    for i in items:
        assert await rt.redis.get(rt.keys.result(i.job_id)) == before[i.custom_id]
        assert len((await rt.store.load_attempts(i.job_id))[0]) == 1
    assert not await rt.redis.hlen(rt.keys.batch_items)
    assert orjson.loads(before[items[0].custom_id])["cost"]["input_pusd"] > 0
    assert (await stats(srv))["duplicate_requests"] == 0


async def test_queue_gauges_show_gathered_and_in_api(env: tuple[Runtime, RunningServer, FakeClock]) -> None:
    import redis as sync_redis

    from worker.batches.metrics import BatchQueueCollector

    rt, _srv, _clock = env
    url = rt.settings.redis_url or ""
    collector = BatchQueueCollector(sync_redis.Redis.from_url(url), rt.keys, [MODEL])

    def values() -> dict[str, float]:
        return {s.name + str(s.labels): s.value for m in collector.collect() for s in m.samples}

    await gathered(rt, 3)
    v = values()
    assert v["routeq_batch_gathered{'model': '" + MODEL + "'}"] == 3
    assert v["routeq_batch_requests_in_api{}"] == 0
    assert await maybe_submit(rt, MODEL, "w1")
    v = values()
    assert v["routeq_batch_gathered{'model': '" + MODEL + "'}"] == 0
    assert v["routeq_batch_requests_in_api{}"] == 3 and v["routeq_batch_open_age_seconds{}"] >= 0
    collector.close()


async def test_in_api_count_returns_to_zero(env: tuple[Runtime, RunningServer, FakeClock]) -> None:
    rt, _srv, clock = env
    await gathered(rt, 2)
    await take_intent(rt, "sub-c")
    assert int(await rt.redis.get(rt.keys.batch_in_api_count)) == 2
    await poll_open(rt, "w1")  # undone: no batch
    assert int(await rt.redis.get(rt.keys.batch_in_api_count)) == 0
    assert await maybe_submit(rt, MODEL, "w1")
    assert int(await rt.redis.get(rt.keys.batch_in_api_count)) == 2
    clock.now += 100
    await poll_open(rt, "w1")
    await poll_open(rt, "w1")
    assert int(await rt.redis.get(rt.keys.batch_in_api_count)) == 0


async def test_refused_create_puts_requests_back_and_413_halves_the_next(redis_url: str) -> None:
    srv = await start_server(MockConfig(batch_latency_s=0.0, batch_max_requests=2))
    s = Settings(redis_url=redis_url, anthropic_base_url=srv.url, anthropic_api_key="k", batch_window_s=0)
    rt = await build_runtime(s)
    try:
        await gathered(rt, 5)
        assert await maybe_submit(rt, MODEL, "w1") is None  # 413: 5 > 2
        assert await rt.redis.zcard(rt.keys.batch_gather(MODEL)) == 5 and not await rt.redis.zcard(
            rt.keys.api_batches
        )
        assert int(await rt.redis.get(rt.keys.batch_size_cap(MODEL))) == 2
        assert await maybe_submit(rt, MODEL, "w1") is None  # backing off
        await rt.redis.delete(rt.keys.batch_backoff(MODEL))
        first = await maybe_submit(rt, MODEL, "w1")
        assert first is not None and await rt.redis.zcard(rt.keys.batch_gather(MODEL)) == 3
        st = srv.state.stats.to_json()["batches"]
        assert (st["created"], st["requests"]) == (1, 2)
    finally:
        await rt.gate.close()
        await rt.client.close()
        await rt.redis.aclose()
        await srv.stop()


async def test_requests_sharing_a_prefix_go_into_the_same_batch(redis_url: str) -> None:
    import asyncio

    srv = await start_server(MockConfig(batch_latency_s=0.0))
    s = Settings(
        redis_url=redis_url,
        anthropic_base_url=srv.url,
        anthropic_api_key="k",
        batch_window_s=0,
        batch_max_requests=2,
    )
    rt = await build_runtime(s)
    try:
        items = await gathered(rt, 3, batch="pre")
        await rt.redis.delete(rt.keys.batch_items, rt.keys.batch_gather(MODEL))
        # a and c share a cached prefix; b, gathered between them, has none.
        for item, prefix in zip(items, ("P", None, "P"), strict=True):
            assert await add(rt, item, "pre", prefix)
            await asyncio.sleep(0.01)
        assert await maybe_submit(rt, MODEL, "w1")
        (sub,) = await rt.redis.zrange(rt.keys.api_batches, 0, -1)
        taken = set(orjson.loads(await rt.redis.hget(rt.keys.api_batch(sub.decode()), "custom_ids")))
        assert taken == {items[0].custom_id, items[2].custom_id}
    finally:
        await rt.gate.close()
        await rt.client.close()
        await rt.redis.aclose()
        await srv.stop()


async def test_a_take_of_more_than_eight_thousand_requests(
    env: tuple[Runtime, RunningServer, FakeClock],
) -> None:
    # Lua's unpack fails past ~8000 values; one ZREM of a whole take stalled every submission.
    rt, _, _ = env
    k, n = rt.keys, 9_000
    async with rt.redis.pipeline(transaction=False) as p:
        for i in range(n):
            p.hset(k.batch_items, f"c{i}", "{}")
            p.zadd(k.batch_gather(MODEL), {f"c{i}": i})
        await p.execute()
    got = await Scripts(rt.redis)["batch_take"](
        keys=[
            k.batch_gather(MODEL),
            k.batch_items,
            k.batch_gather_bytes,
            k.api_batch("big"),
            k.api_batches_open,
            k.api_batches,
            k.batch_in_api_count,
        ],
        args=[10_000, 10**9, "big", MODEL, "w1", 0],
    )
    assert len(got) - 1 == n and not await rt.redis.zcard(k.batch_gather(MODEL))
    assert len(orjson.loads(await rt.redis.hget(k.api_batch("big"), "custom_ids"))) == n
