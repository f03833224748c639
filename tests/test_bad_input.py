"""Bad input: refused at enqueue with a clear reason per line, or, if planted in Redis behind routeq's back,
failed with a clear error in the job's result and dead letter while the worker carries on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.reports import batch_status, dead_letters
from jobs.results import JobResult
from jobs.settings import Settings
from tests.helpers import Fleet, run_cli
from tests.test_chaos import wait_workers

pytestmark = pytest.mark.integration

VALID = b'{"task": "classify", "prompt": "Is this spam? Labels: spam, ham"}'
# (line bytes, words the reason must contain)
BAD: list[tuple[bytes, tuple[str, ...]]] = [
    (b"not json at all", ("not JSON",)),
    (b'{"task": "classify", "prompt": 5}', ("prompt", "string")),
    (b'{"task": "dance", "prompt": "x"}', ("task", "dance")),
    (b'{"task": "qa", "prompt": "x", "constraints": {"tier": "mega"}}', ("constraints.tier", "mega")),
    (b'{"task": "qa", "prompt": ""}', ("prompt",)),
    (b'{"task": "qa", "prompt": "   "}', ("prompt",)),
    (
        b'{"task": "qa", "prompt": "x", "constraints": {"min_tier": "opus", "max_tier": "haiku"}}',
        ("min_tier", "max_tier"),
    ),
    (
        b'{"task": "qa", "prompt": "x", "constraints": {"max_tier": "haiku"}, "documents": [{"name": "big", '
        b'"text": "' + b"lorem ipsum " * 90_000 + b'"}]}',
        ("context window",),
    ),
    (b'{"task": "qa", "prompt": "caf\xe9 \xff"}', ("invalid UTF-8",)),
    (
        b'{"task": "extract", "prompt": "x", "output": {"type": "json", "schema": {"type": 12}}}',
        ("schema", "not a valid JSON Schema"),
    ),
    (b"[1, 2, 3]", ("JSON object",)),
    (b'{"task": "qa", "prompt": "x", "max_output_tokens": -3}', ("max_output_tokens",)),
    (b'{"task": "qa", "prompt": "x", "surprise": 1}', ("surprise", "unknown field")),
]


async def test_cli_refuses_each_bad_line_with_its_reason(redis_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    lines = [VALID, *(b for b, _ in BAD), VALID.replace(b"spam, ham", b"spam, ham, other")]
    f = tmp_path / "jobs.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(f), "--json", "--batch", "bad")
    assert rc == 1
    assert orjson.loads(out) == {"batch": "bad", "enqueued": 2, "duplicates": 0, "rejected": len(BAD)}
    lines = err.strip().splitlines()
    assert lines[0] == "enqueueing into batch bad"  # the batch id comes before the first write
    reasons = dict(line.split(": ", 1) for line in lines[1:])
    assert set(reasons) == {str(n) for n in range(2, len(BAD) + 2)}, err
    for n, (_, words) in enumerate(BAD, start=2):
        for w in words:
            assert w.lower() in reasons[str(n)].lower(), (n, w, reasons[str(n)])
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        st = await batch_status(redis, s.keys, "bad")
        assert (st["enqueued"], st["rejected"]) == (2, len(BAD))
        assert await redis.zcard(s.keys.intake_queue) == 2
    finally:
        await redis.aclose()


async def test_corrupt_payloads_in_redis_fail_alone(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    with Fleet(redis_url, workers=1, ROUTEQ_LEARNED_ROUTER="false") as _fleet:
        try:
            await wait_workers(redis, s, 1)
            now = int(time.time() * 1000)
            not_a_job = {"task": "nope", "prompt": 7, "tags": {"batch": "planted", "tenant": "t1"}}
            planted = {
                "garbage": b"\x00\xffgarbage\x81 not json",
                "notjob": orjson.dumps({"t": None, "f": "process_job", "a": [not_a_job], "k": {}, "et": now}),
                "notarq": orjson.dumps({"hello": "world"}),
            }
            for jid, raw in planted.items():
                await redis.set(f"arq:job:{jid}", raw)
                await redis.zadd(s.keys.intake_queue, {jid: now})
            good = [Job.model_validate({"task": "qa", "prompt": f"Question {i}?"}) for i in range(5)]
            res = await Producer(redis, s).enqueue(good, batch="good")
            deadline = time.monotonic() + 40
            while (await batch_status(redis, s.keys, "good"))["pending"] or any(
                [await redis.get(s.keys.result(j)) is None for j in planted]
            ):
                assert time.monotonic() < deadline, "not every job got an outcome"
                await asyncio.sleep(0.1)
            expect = {
                "garbage": ("unknown", "not valid JSON"),
                "notjob": ("planted", "not a valid job"),
                "notarq": ("unknown", "not an arq job document"),
            }
            for jid, (batch, words) in expect.items():
                r = JobResult.model_validate_json(await redis.get(s.keys.result(jid)))
                assert r.status == "failed" and r.error_type == "invalid_payload", r
                assert words in (r.error or ""), r.error
                dead = await dead_letters(redis, s.keys, batch)
                assert words in dead[jid]["error"]
            notjob = JobResult.model_validate_json(await redis.get(s.keys.result("notjob")))
            assert "task" in (notjob.error or "") and "prompt" in (notjob.error or "")
            # the worker carried on: every valid job is done, and nothing is left on the queue
            st = await batch_status(redis, s.keys, "good")
            assert st["done"] == len(res.job_ids), st
            assert await redis.zcard(s.keys.intake_queue) == 0
        finally:
            await redis.aclose()
