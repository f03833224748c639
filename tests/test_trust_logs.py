"""A worker's log carries ids, sizes and error kinds, never a job's prompt, system, documents or answer.
A real worker process (its own log captured), real redis-server, the stand-in API."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson
import pytest

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.reports import iter_results
from jobs.serialization import arq_job_payload
from jobs.settings import Settings
from tests.helpers import wait_batch, worker_env
from worker.sandbox.embedded import routeq_cmd, start_mock_api

pytestmark = pytest.mark.integration

SSN = "SSN 123-45-6789"
SECRETS = (SSN, "SYSTEM-SECRET-Hx7", "DOCUMENT-SECRET-Qz9", "PLANTED-SECRET-Kv2")


async def test_worker_log_has_no_job_text(redis_url: str, tmp_path: Path) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    api_url, api = start_mock_api()
    try:
        jobs = [
            Job.model_validate(
                {"task": "qa", "prompt": f"{SSN} belongs to whom?", "constraints": {"tier": "haiku"}}
            ),
            Job.model_validate(
                {
                    "task": "summarize",
                    "prompt": f"{SSN}: summarise the file",
                    "system": "SYSTEM-SECRET-Hx7 you are careful",
                    "documents": [{"name": "f.txt", "text": "DOCUMENT-SECRET-Qz9 " * 50}],
                    "constraints": {"tier": "haiku"},
                }
            ),
            # a JSON answer that fails its check, escalates and fails again: the error paths
            Job.model_validate(
                {
                    "task": "extract",
                    "prompt": f"{SSN} [[mock:bad-json]] extract as JSON",
                    "output": {"type": "json"},
                    "constraints": {"max_tier": "sonnet"},
                }
            ),
        ]
        await Producer(redis, s).enqueue(jobs, batch="logs")
        # a payload damaged in Redis behind routeq's back, quoting a secret in a field that is wrong
        now = int(time.time() * 1000)
        bad = {"task": "nope", "prompt": "PLANTED-SECRET-Kv2", "tags": {"batch": "logs", "tenant": "t1"}}
        await redis.set("arq:job:planted", arq_job_payload("process_job", [bad], {}, now))
        await redis.zadd(s.keys.intake_queue, {"planted": now})
        log = tmp_path / "worker.log"
        env = worker_env(redis_url, api_url, ROUTEQ_LEARNED_ROUTER="false", ROUTEQ_SHADOW_RATE="1")
        with log.open("wb") as out:
            worker = subprocess.run(
                routeq_cmd("-v", "worker", "--burst"),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
            )
        assert worker.returncode == 0
        await wait_batch(s, redis, "logs", timeout=10)
        text = log.read_text()
        assert "process_job" in text and "routeq worker" in text  # the log was captured, jobs were logged
        assert "planted" in text  # the damaged job is logged by its id
        answers = [r["output"] async for r in iter_results(redis, s.keys, "logs") if r.get("output")]
        assert answers, "no answer to look for"
        for secret in (*SECRETS, *(a if isinstance(a, str) else orjson.dumps(a).decode() for a in answers)):
            assert secret not in text, f"{secret[:40]!r} is in the worker's log"
    finally:
        await redis.aclose()
        api.stop()
