"""Aggregates flushed per process (worker/fleet/aggregates.py) against a real redis-server: the totals equal
the sum of the per-job increments whoever applies them (the flush, the reaper of a dead process, a clean
exit), a job counts once, and `routeq retry`'s undo of a still-pending job leaves the totals alone."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from jobs.catalog import load_catalog
from jobs.results import Attempt, JobResult, Usage, aggregate_increments
from jobs.settings import Settings
from jobs.tiers import Tier
from worker.fleet.aggregates import PendingAggregates, entry_of, parse_entry
from worker.fleet.recovery import Recovery
from worker.fleet.store import Store
from worker.policy.pricing import price_response

OWNER = "host:1:dead"
CAT = load_catalog()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    r = Redis.from_url(redis_url)
    yield r
    await r.aclose()


def settings(redis_url: str) -> Settings:
    return Settings(_env_file=None, redis_url=redis_url)  # type: ignore[call-arg]


def result(i: int, tenant: str = "acme") -> JobResult:
    usage = Usage(input_tokens=100 + i, output_tokens=20 + i)
    cost = price_response(CAT.spec("claude-haiku-4-5"), usage, dt.date(2026, 1, 5), None)
    attempt = Attempt(n=1, tier=Tier.haiku, model="claude-haiku-4-5", status="ok", usage=usage, cost=cost)
    return JobResult(
        job_id=f"j{i}",
        batch="b",
        tenant=tenant,
        task="qa",
        status="done",
        tier=Tier.haiku,
        usage=usage,
        cost=cost,
        attempts=[attempt],
        finished_at=1_700_000_000 + i,
    )


def busy(pending: PendingAggregates) -> PendingAggregates:
    """A process that just applied a record at once: its next records go through the flush."""
    assert pending.quiet()
    return pending


def expected(*results: JobResult) -> dict[str, int]:
    agg: dict[str, int] = {}
    for r in results:
        for k, v in aggregate_increments(r).items():
            agg[k] = agg.get(k, 0) + v
    return agg


async def agg(redis: Redis, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await redis.hgetall(key)).items() if int(v)}


def tenant_part(full: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in full.items() if not k.startswith("@")}


def test_an_entry_reads_back_as_written() -> None:
    incs, exps = [("k:a", "f:1", 5), ("k:b", "@m:2", -3)], [("k:a", 1000)]
    assert parse_entry(entry_of(incs, exps)) == (incs, exps)


async def test_flush_applies_each_recorded_job_once(redis_url: str, redis: Redis) -> None:
    s = settings(redis_url)
    pending = busy(PendingAggregates(redis, s.keys, OWNER, every_s=60))
    store = Store(redis, s, pending)
    jobs = [result(i) for i in range(5)]
    for r in jobs:
        assert await store.record(r)
    assert not await redis.exists(s.keys.batch_agg("b"))  # not before the flush
    assert await store.record(jobs[0]) is False  # a re-delivered job: refused, not counted again
    assert await pending.flush() == 5
    assert await agg(redis, s.keys.batch_agg("b")) == expected(*jobs)
    assert await agg(redis, s.keys.tenant_agg("acme")) == tenant_part(expected(*jobs))
    assert await redis.pttl(s.keys.batch_agg("b")) > 0
    # the done set's TTL comes with the flush too (record.lua no longer sets it per job)
    assert 0 < await redis.pttl(s.keys.batch_done("b")) <= (s.job_expiry_s + s.result_ttl_s) * 1000
    assert not await redis.exists(pending.key)
    assert await pending.flush() == 0


async def test_a_dead_process_pending_jobs_are_applied_by_its_reaper_once(
    redis_url: str, redis: Redis
) -> None:
    s = settings(redis_url)
    dead = busy(PendingAggregates(redis, s.keys, OWNER, every_s=60))
    store = Store(redis, s, dead)
    await redis.sadd(s.keys.recovery_owners, OWNER)  # registered, then its heartbeat stopped
    jobs = [result(i) for i in range(3)]
    for r in jobs:
        await store.record(r)
    reaper = Recovery(redis, redis_url, s.keys, "host:2:live")
    got = await reaper.reap(OWNER)
    assert got is not None
    assert await agg(redis, s.keys.batch_agg("b")) == expected(*jobs)
    # The "dead" process was only frozen: its late flush finds nothing left to apply.
    assert await dead.flush() == 0
    assert await agg(redis, s.keys.batch_agg("b")) == expected(*jobs)
    assert await agg(redis, s.keys.tenant_agg("acme")) == tenant_part(expected(*jobs))


async def test_a_flush_after_part_of_its_jobs_were_applied_elsewhere(redis_url: str, redis: Redis) -> None:
    s = settings(redis_url)
    pending = busy(PendingAggregates(redis, s.keys, OWNER, every_s=60))
    store = Store(redis, s, pending)
    jobs = [result(i) for i in range(4)]
    for r in jobs:
        await store.record(r)
    await redis.sadd(s.keys.recovery_owners, OWNER)
    # `routeq retry` undoes j1 while it is still pending: its entry is dropped, nothing subtracted.
    assert await Store(redis, s).unrecord(jobs[1])
    assert await pending.flush() == 3
    assert await agg(redis, s.keys.batch_agg("b")) == expected(jobs[0], jobs[2], jobs[3])


async def test_undoing_a_flushed_job_subtracts_it(redis_url: str, redis: Redis) -> None:
    s = settings(redis_url)
    pending = busy(PendingAggregates(redis, s.keys, OWNER, every_s=60))
    store = Store(redis, s, pending)
    jobs = [result(i) for i in range(2)]
    for r in jobs:
        await store.record(r)
    await pending.flush()
    assert await store.unrecord(jobs[0])
    assert await agg(redis, s.keys.batch_agg("b")) == expected(jobs[1])


async def test_a_record_resent_after_a_lost_reply_still_counts(redis_url: str, redis: Redis) -> None:
    s = settings(redis_url)
    pending = busy(PendingAggregates(redis, s.keys, OWNER, every_s=60))
    r = result(7)
    # The first send ran (entry pending) but its reply was lost: the process never learned of it.
    assert await Store(redis, s, busy(PendingAggregates(redis, s.keys, OWNER, every_s=60))).record(r)
    assert await Store(redis, s, pending).record(r) is False
    assert await pending.flush() == 1
    assert await agg(redis, s.keys.batch_agg("b")) == expected(r)


async def test_adopt_takes_on_entries_the_process_lost_track_of(redis_url: str, redis: Redis) -> None:
    s = settings(redis_url)
    lost = [result(i) for i in range(3)]
    for r in lost:
        await Store(redis, s, busy(PendingAggregates(redis, s.keys, OWNER, every_s=60))).record(r)
    pending = busy(PendingAggregates(redis, s.keys, OWNER, every_s=60))
    assert await pending.adopt() == 3
    assert await pending.adopt() == 0
    assert await pending.flush() == 3
    assert await agg(redis, s.keys.batch_agg("b")) == expected(*lost)


async def test_a_quiet_process_applies_a_lone_record_at_once(redis_url: str, redis: Redis) -> None:
    s = settings(redis_url)
    pending = PendingAggregates(redis, s.keys, OWNER, every_s=60)
    store = Store(redis, s, pending)
    first, second = result(1), result(2)
    assert await store.record(first)
    assert await agg(redis, s.keys.batch_agg("b")) == expected(first)  # no lag for a lone job
    assert await store.record(second)  # within the window: batched
    assert await agg(redis, s.keys.batch_agg("b")) == expected(first)
    assert await pending.flush() == 1
    assert await agg(redis, s.keys.batch_agg("b")) == expected(first, second)


async def test_a_store_without_a_flusher_applies_at_once(redis_url: str, redis: Redis) -> None:
    s = settings(redis_url)
    r = result(1)
    assert await Store(redis, s).record(r)
    assert await agg(redis, s.keys.batch_agg("b")) == expected(r)
    assert 0 < await redis.pttl(s.keys.batch_done("b")) <= (s.job_expiry_s + s.result_ttl_s) * 1000


async def test_a_record_finishes_its_arq_job_in_the_same_step(redis_url: str, redis: Redis) -> None:
    from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix

    from worker.fleet.store import ArqRun

    s = settings(redis_url)
    r = result(7)
    running, finished = s.keys.recovery_running("vm:1:abc"), set[str]()
    await redis.zadd(s.keys.intake_queue, {r.job_id: 1, "other": 2})
    await redis.sadd(running, r.job_id, "other")  # type: ignore[misc]
    for prefix in (in_progress_key_prefix, retry_key_prefix, job_key_prefix):
        await redis.set(prefix + r.job_id, "x")
    arq = ArqRun(r.job_id, s.keys.intake_queue, running, finished)
    assert await Store(redis, s).record(r, arq=arq)
    assert finished == {r.job_id}  # RecoveringWorker.finish_job skips it
    assert await redis.zrange(s.keys.intake_queue, 0, -1) == [b"other"]  # never recorded yet queued
    assert await redis.smembers(running) == {b"other"}  # type: ignore[misc]
    for prefix in (in_progress_key_prefix, retry_key_prefix, job_key_prefix):
        assert not await redis.exists(prefix + r.job_id)
    assert await agg(redis, s.keys.batch_agg("b")) == expected(r)
    # a duplicate run's record is refused, and still ends its arq job
    await redis.zadd(s.keys.intake_queue, {r.job_id: 3})
    finished.clear()
    assert not await Store(redis, s).record(r, arq=arq)
    assert finished == {r.job_id} and await redis.zrange(s.keys.intake_queue, 0, -1) == [b"other"]
    assert await agg(redis, s.keys.batch_agg("b")) == expected(r)


async def test_the_recovering_worker_skips_the_finish_a_record_did(redis_url: str, redis: Redis) -> None:
    from arq.worker import func

    from worker.fleet.arq_worker import RecoveringWorker

    async def noop(ctx: dict[str, object]) -> None:
        return None

    s = settings(redis_url)
    finished = {"done1"}
    w = RecoveringWorker(
        [func(noop, name="noop")],
        redis_pool=redis,  # type: ignore[arg-type]
        queue_name="q",
        recovery_owner="vm:1:abc",
        recovery_keys=s.keys,
        finished_elsewhere=finished,
        handle_signals=False,
    )
    await redis.zadd("q", {"done1": 1, "other": 2})
    await w.finish_job("done1", True, None, None, False, None, None)
    assert finished == set() and await redis.zcard("q") == 2  # skipped: the record did it
    await w.finish_job("other", True, None, None, False, None, None)
    assert await redis.zrange("q", 0, -1) == [b"done1"]


async def test_a_process_recording_without_pause_applies_through_the_flush_only(
    redis_url: str, redis: Redis
) -> None:
    # Only a record after a pause of every_s applies at once; while records keep coming (spaced less than
    # every_s apart), every one goes through the flush, the first one after a flush included.
    s = settings(redis_url)
    pending = PendingAggregates(redis, s.keys, OWNER, every_s=0.2)
    store = Store(redis, s, pending)
    jobs = [result(i) for i in range(8)]
    assert await store.record(jobs[0])  # a quiet process: at once
    assert await agg(redis, s.keys.batch_agg("b")) == expected(jobs[0])
    for r in jobs[1:]:
        await asyncio.sleep(0.05)
        assert await store.record(r)
        assert len(pending) == 1, "applied at once while the process was busy"
        assert await pending.flush() == 1
    assert await agg(redis, s.keys.batch_agg("b")) == expected(*jobs)
    await asyncio.sleep(0.25)
    late = result(100)
    assert await store.record(late) and len(pending) == 0  # after a pause: at once again
    assert await agg(redis, s.keys.batch_agg("b")) == expected(*jobs, late)


async def test_a_flush_applies_only_what_was_recorded_before_it(redis_url: str, redis: Redis) -> None:
    # Records landing while a flush's script call is in flight wait for the next flush: a flush that
    # drained until empty kept a busy process flushing back to back instead of once per every_s.
    s = settings(redis_url)
    pending = busy(PendingAggregates(redis, s.keys, OWNER, every_s=60))
    store = Store(redis, s, pending)
    first, late = [result(i) for i in range(3)], [result(i) for i in range(3, 5)]
    for r in first:
        assert await store.record(r)
    script = pending._script
    calls = 0

    async def record_meanwhile(**kw: object) -> object:
        nonlocal calls
        calls += 1
        out = await script(**kw)  # type: ignore[arg-type]
        if calls == 1:
            for r in late:
                assert await store.record(r)
        return out

    pending._script = record_meanwhile  # type: ignore[assignment]
    assert await pending.flush() == 3
    assert calls == 1 and len(pending) == 2
    assert await agg(redis, s.keys.batch_agg("b")) == expected(*first)
    assert await pending.flush() == 2
    assert await agg(redis, s.keys.batch_agg("b")) == expected(*first, *late)


async def test_a_record_saves_the_last_attempt_with_its_spend_once(redis_url: str, redis: Redis) -> None:
    # The last attempt's save rides in the record's own script: the paid answer is kept and its spend
    # counted once, with the record or (a duplicate run's paid call) without it.
    s = settings(redis_url)
    pending = busy(PendingAggregates(redis, s.keys, OWNER, every_s=60))
    store = Store(redis, s, pending)
    spent_key = s.keys.budget("tenant", "acme")
    r = result(1)
    spend = ([(spent_key, "spent", 7)], [])
    last = (r.attempts[0], {"text": "yes", "stop_reason": "end_turn"}, spend)
    assert await store.record(r, last=last)
    assert await store.record(r, last=last) is False  # re-sent: neither counted nor saved again
    attempts, paid = await store.load_attempts(r.job_id)
    assert [a.n for a in attempts] == [1] and paid[1]["text"] == "yes"
    # a second run of the same job paid for its own call (attempt 2): saved and charged, not counted
    again = r.model_copy(update={"attempts": [*r.attempts, r.attempts[0].model_copy(update={"n": 2})]})
    assert await store.record(again, last=(again.attempts[1], {"text": "no"}, spend)) is False
    assert await pending.flush() == 3  # the job's entry and two spends
    assert await agg(redis, s.keys.batch_agg("b")) == expected(r)
    assert int(await redis.hget(spent_key, "spent")) == 14  # type: ignore[misc]
    assert [a.n for a in (await store.load_attempts(r.job_id))[0]] == [1, 2]
