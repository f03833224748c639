"""Secrets (the API key, a Redis password) never reach logs, results, dead letters or Redis."""

from __future__ import annotations

import subprocess

import pytest

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.settings import Settings
from tests.helpers import wait_batch, worker_env
from worker.sandbox.embedded import free_port, redis_server_binary, routeq_cmd, start_mock_api, wait_port

pytestmark = pytest.mark.integration

KEY = "sk-ant-api03-LEAKCHECK-7f3a9c"
PASSWORD = "hunter2-LEAKCHECK-pw"


async def test_no_secret_in_logs_results_or_redis(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    server = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--requirepass",
            PASSWORD,
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc=server)
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    # The stand-in accepts only another key, so the job fails with an auth error: the path most likely
    # to echo a credential into a message.
    api_url, api = start_mock_api("--api-key", "the-right-key")
    # A 401 pauses the fleet; a short patience lets the jobs fail so the burst worker ends.
    env = worker_env(
        url,
        api_url,
        ANTHROPIC_API_KEY=KEY,
        ROUTEQ_LEARNED_ROUTER="false",
        ROUTEQ_AUTH_PAUSE_S="0.3",
        ROUTEQ_OUTAGE_PATIENCE_S="1",
    )
    log = tmp_path / "worker.log"
    s = Settings(redis_url=url)
    r = await connect(s)
    try:
        jobs = [
            Job.model_validate({"task": "classify", "prompt": "spam?"}),
            Job.model_validate({"task": "qa", "prompt": "why?"}),
        ]
        await Producer(r, s).enqueue(jobs, batch="sec")
        with log.open("wb") as out:
            worker = subprocess.run(
                routeq_cmd("worker", "--burst"),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
            )
        assert worker.returncode == 0
        st = await wait_batch(s, r, "sec", timeout=10)
        assert st["failed"] == 2 and st["dead"] == 2  # 401 past the outage patience: failed
        text = log.read_text()
        assert "routeq worker" in text  # the log was captured
        dump = [text]
        async for k in r.scan_iter(count=1000):
            t = await r.type(k)
            if t == b"string":
                dump.append(str(await r.get(k)))
            elif t == b"hash":
                dump.append(str(await r.hgetall(k)))
            elif t == b"list":
                dump.append(str(await r.lrange(k, 0, -1)))
            elif t in (b"set", b"zset"):
                dump.append(str(await (r.smembers(k) if t == b"set" else r.zrange(k, 0, -1))))
            dump.append(k.decode())
        blob = "\n".join(dump)
        assert "invalid x-api-key" in blob  # the API's own message is kept
        for secret in (KEY, PASSWORD, KEY[-12:]):
            assert secret not in blob, f"{secret!r} leaked"
        cli = subprocess.run(routeq_cmd("results", "sec"), env=env, capture_output=True, text=True)
        assert (
            cli.returncode == 0
            and KEY not in cli.stdout + cli.stderr
            and PASSWORD not in cli.stdout + cli.stderr
        )
    finally:
        await r.aclose()
        api.stop()
        server.terminate()
        server.wait(10)
