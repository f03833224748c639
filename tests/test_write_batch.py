"""WriteBatch: several modules' scripts in one round trip, surviving a Redis that forgot its scripts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from jobs.results import Attempt
from jobs.settings import Settings
from jobs.tiers import Tier
from worker.fleet.redis_scripts import WriteBatch
from worker.fleet.store import Store

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    r = Redis.from_url(redis_url)
    yield r
    await r.aclose()


async def test_scripts_run_in_order_with_replies_even_after_a_script_flush(redis: Redis) -> None:
    incr = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    append = redis.register_script("return redis.call('RPUSH', KEYS[1], ARGV[1])")
    replies: list[Any] = []
    batch = WriteBatch(redis)
    batch.script(incr, ["n"], [5], then=replies.append)
    batch.script(append, ["log"], ["a"], then=replies.append)
    await redis.script_flush()  # a restarted Redis: NOSCRIPT for both, each loaded and run once
    await batch.execute()
    assert replies == [5, 1]
    assert int(await redis.get("n")) == 5 and await redis.lrange("log", 0, -1) == [b"a"]  # type: ignore[misc]
    again = WriteBatch(redis)
    again.script(incr, ["n"], [2], then=replies.append)
    await again.execute()  # known now: one EVALSHA
    assert replies[-1] == 7


async def test_an_attempt_re_sent_after_a_lost_reply_is_saved_once(redis: Redis, redis_url: str) -> None:
    store = Store(redis, Settings(_env_file=None, redis_url=redis_url))  # type: ignore[call-arg]
    first = Attempt(n=1, tier=Tier.haiku, model="m", status="ok")
    for _ in range(2):  # the same batch sent twice, as persist() does after a connection error
        batch = WriteBatch(redis)
        store.save_attempt_into(batch, "job1", first, {"text": "hi", "stop_reason": "end_turn"})
        await batch.execute()
    attempts, paid = await store.load_attempts("job1")
    assert [a.n for a in attempts] == [1] and paid == {1: {"text": "hi", "stop_reason": "end_turn"}}
    batch = WriteBatch(redis)
    store.save_attempt_into(batch, "job1", Attempt(n=2, tier=Tier.sonnet, model="m2", status="ok"))
    await batch.execute()
    attempts, _ = await store.load_attempts("job1")
    assert [a.n for a in attempts] == [1, 2]


async def test_a_jobs_calls_are_one_key_in_attempt_order_with_their_paid_answers(
    redis: Redis, redis_url: str
) -> None:
    store = Store(redis, Settings(_env_file=None, redis_url=redis_url))  # type: ignore[call-arg]
    batch = WriteBatch(redis)
    for n in range(1, 12):  # past 9, so the order is numeric, not that of the field names
        answer = {"text": f"a{n}"} if n % 2 else None
        store.save_attempt_into(batch, "job2", Attempt(n=n, tier=Tier.haiku, model="m", status="ok"), answer)
    await batch.execute()
    attempts, paid = await store.load_attempts("job2")
    assert [a.n for a in attempts] == list(range(1, 12))
    assert paid == {n: {"text": f"a{n}"} for n in range(1, 12, 2)}
    calls = store.keys.calls("job2")
    assert [k async for k in redis.scan_iter(match="*job2*")] == [calls.encode()]
    assert 0 < await redis.ttl(calls) <= store.settings.job_expiry_s + store.settings.result_ttl_s
