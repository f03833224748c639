"""The one-script claim of RecoveringWorker (worker/lua/claim.lua) against a real redis-server.

What arq's own claim guarantees must still hold: a job is claimed by one puller only, a deferred job is
not claimed early, a claimed job is skipped (not re-run) by the next poll, and the in-progress key and
the owner's running set say who holds it, so the reaper can hand it back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.worker import func

from jobs.keys import Keys
from tests.helpers import command_calls
from worker.fleet.arq_worker import RecoveringWorker

pytestmark = pytest.mark.asyncio

QUEUE = "test:claim:queue"
KEYS = Keys("test")


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    p = ArqRedis.from_url(redis_url)
    yield p
    await p.aclose()


def started(log: list[str]) -> Any:
    async def job(ctx: dict[str, Any], tag: str) -> None:
        log.append(tag)
        await asyncio.sleep(0.3)

    return func(job, name="job")


def make_worker(
    pool: ArqRedis, owner: str, log: list[str], max_jobs: int, job: Any = None, **kw: Any
) -> RecoveringWorker:
    """A claiming worker on QUEUE running ``job`` (default: one that logs its tag), ``kw`` passed on."""
    return RecoveringWorker(
        [job or started(log)],
        queue_name=QUEUE,
        redis_pool=pool,
        max_jobs=max_jobs,
        handle_signals=False,
        keep_result=0,
        poll_delay=0.01,
        recovery_owner=owner,
        recovery_keys=KEYS,
        **kw,
    )


async def test_pullers_never_claim_the_same_job(pool: ArqRedis) -> None:
    for i in range(40):
        await pool.enqueue_job("job", f"j{i}", _job_id=f"j{i}", _queue_name=QUEUE)
    log_a: list[str] = []
    log_b: list[str] = []
    a, b = make_worker(pool, "A:1", log_a, 8), make_worker(pool, "B:1", log_b, 8)
    got = await asyncio.gather(a.claim_ready(8), b.claim_ready(8))
    assert got == [8, 8]
    claimed_a = {m.decode() for m in await pool.smembers(KEYS.recovery_running("A:1"))}  # type: ignore[misc]
    claimed_b = {m.decode() for m in await pool.smembers(KEYS.recovery_running("B:1"))}  # type: ignore[misc]
    assert not claimed_a & claimed_b
    assert len(claimed_a) + len(claimed_b) == sum(got)
    for job_id in claimed_a:
        assert await pool.get(in_progress_key_prefix + job_id) == b"A:1"
    # oldest first: the claims took the head of the queue
    assert claimed_a | claimed_b == {f"j{i}" for i in range(sum(got))}
    await asyncio.gather(*a.tasks.values(), *b.tasks.values())
    assert sorted(log_a + log_b) == sorted(claimed_a | claimed_b)
    # finished: in-progress keys and running-set entries are gone in the same MULTI as arq's finish
    assert await pool.scard(KEYS.recovery_running("A:1")) == 0  # type: ignore[misc]
    assert not [k async for k in pool.scan_iter(in_progress_key_prefix + "*")]
    assert await pool.zcard(QUEUE) == 40 - sum(got)


async def test_claim_skips_held_jobs_and_leaves_deferred_ones(pool: ArqRedis) -> None:
    for i in range(5):
        await pool.enqueue_job("job", f"h{i}", _job_id=f"h{i}", _queue_name=QUEUE)
    await pool.enqueue_job("job", "later", _job_id="later", _queue_name=QUEUE, _defer_by=60)
    await pool.enqueue_job("job", "ready", _job_id="ready", _queue_name=QUEUE)
    held: list[str] = []
    holder = make_worker(pool, "H:1", held, 5)
    assert await holder.claim_ready(5) == 5
    log: list[str] = []
    w = make_worker(pool, "W:1", log, 4)
    # five held jobs at the head are skipped; the deferred one is not due; only "ready" is claimed
    assert await w.claim_ready(4) == 1
    assert list(w.tasks) == ["ready"]
    assert await w.claim_ready(4) == 0  # not claimed twice while it runs
    await asyncio.gather(*holder.tasks.values(), *w.tasks.values())
    assert log == ["ready"]
    assert await pool.zcard(QUEUE) == 1  # the deferred job waits for its time


async def test_claim_tells_which_jobs_have_no_saved_calls(pool: ArqRedis) -> None:
    # A job with a calls hash (a call of it was saved: an earlier run, or `routeq retry`) must load it;
    # only jobs without one are marked fresh, and only on a queue whose arq ids are routeq job ids.
    for i in range(4):
        await pool.enqueue_job("job", f"f{i}", _job_id=f"f{i}", _queue_name=QUEUE)
    await pool.hset(KEYS.calls("f1"), "1", "{}")  # type: ignore[misc]
    await pool.hset(KEYS.calls("f3"), "1", "{}")  # type: ignore[misc]
    fresh: set[str] = set()
    w = make_worker(pool, "F:1", [], 4, calls_prefix=KEYS.calls(""), fresh=fresh)
    assert await w.claim_ready(4) == 4
    assert fresh == {"f0", "f2"}
    await asyncio.gather(*w.tasks.values())
    assert fresh == set()  # arq's finish of a run takes its id out, whether or not the job read it
    for i in range(2):
        await pool.enqueue_job("job", f"g{i}", _job_id=f"g{i}", _queue_name=QUEUE)
    plain = make_worker(pool, "G:1", [], 2)  # no calls prefix (a tier queue): nothing is marked
    assert await plain.claim_ready(2) == 2
    assert plain.fresh == set()
    await asyncio.gather(*plain.tasks.values())


async def test_a_claimed_run_starts_from_the_claims_reads(pool: ArqRedis) -> None:
    # arq's run_job opens with a MULTI of its own (GET the job, INCR and EXPIRE its retry key); the claim
    # script does those reads, so a run costs one round trip less and still sees its delivery count.
    for i in range(3):
        await pool.enqueue_job("job", f"r{i}", _job_id=f"r{i}", _queue_name=QUEUE)
    await pool.set(retry_key_prefix + "r1", 2)  # delivered twice before
    await pool.enqueue_job("job", "gone", _job_id="gone", _queue_name=QUEUE)
    await pool.delete(job_key_prefix + "gone")  # its job key expired: arq fails it as it would
    tries: dict[str, int] = {}

    async def job(ctx: dict[str, Any], tag: str) -> None:
        tries[tag] = ctx["job_try"]

    w = make_worker(pool, "R:1", [], 8, job=func(job, name="job"))
    before = await command_calls(pool, "multi")
    assert await w.claim_ready(8) == 4
    await asyncio.gather(*w.tasks.values())
    assert tries == {"r0": 1, "r1": 3, "r2": 1}
    assert await command_calls(pool, "multi") - before == 4  # arq's finish only: one MULTI per run, not two
    assert await pool.zcard(QUEUE) == 0  # the expired one was finished as failed
