"""The producer against a real redis-server: bulk writes arq can read, dedup, rejections."""

from __future__ import annotations

import orjson
import pytest
from arq.jobs import deserialize_job

from jobs.connections import connect
from jobs.contract import Job
from jobs.keys import JOB_FUNCTION
from jobs.producer import Producer
from jobs.serialization import deserialize
from jobs.settings import Settings
from jobs.sources import Rejected

pytestmark = pytest.mark.integration


def jobs(n: int, prefix: str = "p") -> list[Job]:
    return [Job(task="qa", prompt=f"{prefix} {i}") for i in range(n)]  # type: ignore[arg-type]


async def test_bulk_enqueue_writes_arq_jobs(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    r = await connect(s)
    try:
        res = await Producer(r, s).enqueue(jobs(1203), batch="b1")
        assert (res.enqueued, res.duplicates, res.rejected) == (1203, 0, [])
        assert await r.zcard(s.keys.intake_queue) == 1203
        raw = await r.get(f"arq:job:{res.job_ids[0]}")
        jd = deserialize_job(raw, deserializer=deserialize)
        assert jd.function == JOB_FUNCTION
        job = Job.from_wire(jd.args[0])
        assert job.job_id == res.job_ids[0] and job.tags.batch == "b1"
        assert 0 < await r.pttl(f"arq:job:{res.job_ids[0]}") <= s.job_expiry_s * 1000
    finally:
        await r.aclose()


async def test_same_job_twice_is_processed_once(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    r = await connect(s)
    try:
        p = Producer(r, s)
        first = await p.enqueue(jobs(10), batch="b2")
        again = await p.enqueue(jobs(12), batch="b2")
        assert (first.enqueued, first.duplicates) == (10, 0)
        assert (again.enqueued, again.duplicates) == (2, 10)
        assert await r.zcard(s.keys.intake_queue) == 12
        meta = await r.hgetall(s.keys.batch_meta("b2"))
        assert int(meta[b"enqueued"]) == 12 and int(meta[b"duplicates"]) == 10
        other = await p.enqueue(jobs(3), batch="b3")  # same content, other batch: its own jobs
        assert other.enqueued == 3
    finally:
        await r.aclose()


async def test_rejections_do_not_stop_the_rest(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    r = await connect(s)
    try:
        huge = Job.model_validate(
            {"task": "summarize", "prompt": "x", "documents": [{"name": "d", "text": "w " * 900_000}]}
        )
        items: list[Job | Rejected] = [*jobs(2), Rejected("3", "not JSON"), huge]
        res = await Producer(r, s).enqueue(items, batch="b4")
        assert res.enqueued == 2
        assert res.rejected[0] == "3: not JSON"
        assert "context window" in res.rejected[1] and "documents too large" in res.rejected[1]
        meta = await r.hgetall(s.keys.batch_meta("b4"))
        assert int(meta[b"rejected"]) == 2
    finally:
        await r.aclose()


async def test_payload_is_json_not_pickle(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    r = await connect(s)
    try:
        res = await Producer(r, s).enqueue(jobs(1), batch="b5")
        raw = await r.get(f"arq:job:{res.job_ids[0]}")
        assert orjson.loads(raw)["f"] == JOB_FUNCTION
    finally:
        await r.aclose()


async def test_document_share_counts(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    r = await connect(s)
    try:
        doc = {"name": "contract.txt", "text": "clause " * 50}
        own = {"name": "mine.txt", "text": "only here"}
        jobs_ = [
            Job.model_validate(
                {"task": "qa", "prompt": f"q{i}", "documents": [doc] + ([own] if i == 0 else [])}
            )
            for i in range(3)
        ]
        await Producer(r, s).enqueue(jobs_, batch="docs")
        counts = await r.hgetall(s.keys.batch_docs("docs"))
        assert {k.decode(): int(v) for k, v in counts.items()} == {
            jobs_[0].documents[0].content_key: 3,
            jobs_[0].documents[1].content_key: 1,
        }
    finally:
        await r.aclose()
