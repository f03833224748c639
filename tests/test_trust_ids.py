"""A caller's job id is a name inside its batch: the same id in two batches is two jobs, two calls and
two results; inside one batch it names one job. Real redis-server, a real worker process, the stand-in."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobs.connections import connect
from jobs.reports import batch_status, iter_results
from jobs.results import JobResult
from jobs.serialization import arq_job_payload
from jobs.settings import Settings
from tests.helpers import Fleet, api_stats, run_cli, wait_batch


def problem_lines(err: str) -> list[str]:
    """stderr without the line that names the batch before the first write."""
    return [line for line in err.strip().splitlines() if not line.startswith("enqueueing into batch ")]


pytestmark = pytest.mark.integration


def jsonl(path: Path, *jobs: dict[str, Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(j) + b"\n" for j in jobs))
    return path


def row(tenant: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "row-1",
        "task": "qa",
        "prompt": prompt,
        "constraints": {"tier": "haiku"},
        "tags": {"tenant": tenant, "labels": {"owner": tenant}},
        **extra,
    }


async def rows(redis: Any, s: Settings, batch: str) -> list[dict[str, Any]]:
    return [r async for r in iter_results(redis, s.keys, batch)]


async def test_same_id_in_two_batches_is_two_jobs(redis_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    alice = jsonl(tmp_path / "alice.jsonl", row("alice", "Alice's private question: what is in clause 4?"))
    bob = jsonl(tmp_path / "bob.jsonl", row("bob", "Bob's private question: who signs the lease?"))
    with Fleet(redis_url, workers=1, ROUTEQ_LEARNED_ROUTER="false") as fleet:
        try:
            rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(alice), "--batch", "idsA")
            assert (rc, out.strip()) == (0, "idsA"), err
            await wait_batch(s, redis, "idsA", timeout=60)
            rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(bob), "--batch", "idsB")
            assert (rc, out.strip()) == (0, "idsB"), err
            st = await wait_batch(s, redis, "idsB", timeout=60)
            assert st["done"] == 1, st
            a, b = (await rows(redis, s, "idsA"))[0], (await rows(redis, s, "idsB"))[0]
            # Each job was sent to the API itself: two calls, one per internal id.
            calls = api_stats(fleet.api_url)["jobs"]
            assert calls.get(a["job_id"]) == 1 and calls.get(b["job_id"]) == 1, calls
            assert a["job_id"] != b["job_id"]
            # Each result stays in its own batch and tenant, under the caller's id.
            assert (a["id"], a["batch"], a["tenant"], a["labels"]) == (
                "row-1",
                "idsA",
                "alice",
                {"owner": "alice"},
            )
            assert (b["id"], b["batch"], b["tenant"], b["labels"]) == (
                "row-1",
                "idsB",
                "bob",
                {"owner": "bob"},
            )
            assert [x["status"] for x in b["attempts"]] == ["ok"]
            assert a["attempts"][0]["request_id"] != b["attempts"][0]["request_id"]
            # No per-job key carries the caller's id: it is a name, not a key.
            assert not [k async for k in redis.scan_iter(match="*row-1*")]
        finally:
            await redis.aclose()


async def test_same_id_other_content_in_one_batch_is_rejected_by_line(
    redis_url: str, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    f = jsonl(
        tmp_path / "jobs.jsonl",
        row("alice", "first question"),
        row("alice", "another question under the same id"),
        row("alice", "first question"),  # the same job again: a duplicate
    )
    rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(f), "--batch", "one", "--json")
    assert rc == 1
    assert orjson.loads(out) == {"batch": "one", "enqueued": 1, "duplicates": 1, "rejected": 1}
    assert problem_lines(err)[0] == "2: id row-1 already used in this batch for another job"
    # Across enqueues too: the name stays taken by the first job's content.
    g = jsonl(tmp_path / "later.jsonl", row("alice", "yet another question"), row("alice", "first question"))
    rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(g), "--batch", "one", "--json")
    assert rc == 1 and orjson.loads(out)["duplicates"] == 1, (out, err)
    assert problem_lines(err)[0] == "1: id row-1 already used in this batch for another job"


async def test_a_batch_belongs_to_one_tenant(redis_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    s = Settings(redis_url=redis_url)
    a = jsonl(tmp_path / "a.jsonl", row("alice", "alice asks"))
    b = jsonl(tmp_path / "b.jsonl", {**row("bob", "bob asks"), "id": "row-2"})
    assert (await asyncio.to_thread(run_cli, "enqueue", str(a), "--batch", "shared"))[0] == 0
    rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(b), "--batch", "shared")
    assert rc == 2 and out == ""
    assert "batch 'shared' belongs to tenant 'alice', not 'bob'" in err
    # the same with the tenant given on the command line
    c = jsonl(tmp_path / "c.jsonl", {"id": "row-3", "task": "qa", "prompt": "no tenant in the line"})
    rc, out, err = await asyncio.to_thread(
        run_cli, "enqueue", str(c), "--batch", "shared", "--tag", "tenant=bob"
    )
    assert rc == 2 and out == "" and "belongs to tenant 'alice', not 'bob'" in err
    # Mixed tenants in one input: the first job's tenant owns the batch, the others are refused by line.
    mixed = jsonl(tmp_path / "m.jsonl", {**row("carol", "c"), "id": "c1"}, {**row("dave", "d"), "id": "d1"})
    rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(mixed), "--batch", "mixed")
    assert rc == 1
    assert problem_lines(err)[0].startswith(
        "2: tags.tenant 'dave' differs from tenant 'carol' of batch 'mixed'"
    )
    redis = await connect(s)
    try:
        st = await batch_status(redis, s.keys, "shared")
        assert (st["enqueued"], st["tenant"]) == (1, "alice")
    finally:
        await redis.aclose()


async def test_job_queued_before_ids_were_scoped_still_runs(redis_url: str) -> None:
    """A job document written by the previous producer (no internal_id; arq id = the caller's id)."""
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    wire = {
        "version": 1,
        "id": "legacy-7",
        "task": "qa",
        "prompt": "an old question",
        "system": None,
        "documents": [],
        "tags": {"tenant": "t1", "batch": "old", "labels": {}},
        "constraints": {"min_tier": None, "max_tier": None, "tier": "haiku"},
        "max_output_tokens": 1024,
        "output": {"type": "text", "schema": None},
        "trace_context": {},
    }
    now = int(time.time() * 1000)
    await redis.set("arq:job:legacy-7", arq_job_payload("process_job", [wire], {}, now))
    await redis.zadd(s.keys.intake_queue, {"legacy-7": now})
    await redis.sadd(s.keys.batch_jobs("old"), "legacy-7")
    await redis.hset(s.keys.batch_meta("old"), mapping={"enqueued": 1, "created_ms": now})
    with Fleet(redis_url, workers=1, ROUTEQ_LEARNED_ROUTER="false"):
        try:
            st = await wait_batch(s, redis, "old", timeout=60)
            r = JobResult.model_validate_json(await redis.get(s.keys.result("legacy-7")))
            assert st["done"] == 1, r
            assert (r.status, r.id, r.batch) == ("done", "legacy-7", "old")
        finally:
            await redis.aclose()


def test_internal_ids_are_key_safe_and_carry_no_content() -> None:
    from jobs.contract import Job, name_problem

    secret = "SSN 123-45-6789"
    for data in ({"id": "row-1"}, {}):
        job = Job.model_validate({"task": "qa", "prompt": secret, **data})
        wire, digest = job.place("b1", "t1")
        internal = wire["internal_id"]
        assert name_problem(internal) is None and len(internal) == 32
        assert "row" not in internal and "123" not in internal
        assert wire["id"] == data.get("id") and len(digest) == 64
    # the digest is the content: the same job under another caller id has the same one
    a = Job.model_validate({"task": "qa", "prompt": "x", "id": "a"}).place("b1")
    b = Job.model_validate({"task": "qa", "prompt": "x", "id": "b"}).place("b1")
    assert a[1] == b[1] and a[0]["internal_id"] != b[0]["internal_id"]
