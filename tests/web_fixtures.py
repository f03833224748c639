"""A finished batch with dead letters behind a real UI server, for the web API and browser tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from redis.asyncio import Redis

from jobs.producer import Producer
from jobs.settings import Settings
from jobs.sources import parse_job
from worker.sandbox import corpus
from worker.web.app import HUB, make_app, start_site
from worker.web.auth import make_auth
from worker.web.hub import Hub

TOKEN = "ui-tok-SECRET-7f3a"
SECRET_PROMPT = "The launch code is PINEAPPLE-42."
# 429s and 529s from the stand-in, so the counters, cooldowns and escalations have something to count.
FAULTS = ("--faults", "429=0.05,haiku:529=0.15", "--seed", "11")


def batch_jobs(n: int, dead: int) -> list[Any]:
    jobs = [parse_job(j) for j in corpus.generate(n, seed=5)]
    for i in range(dead):  # a 400 is final at once: these become dead letters
        jobs.append(
            parse_job(
                {"id": f"dead-{i}", "task": "summarize", "prompt": f"{SECRET_PROMPT} [[mock:fault-400]] #{i}"}
            )
        )
    return jobs


async def enqueue(redis: Redis, s: Settings, batch: str, n: int = 40, dead: int = 2) -> list[str]:
    res = await Producer(redis, s).enqueue(batch_jobs(n, dead), batch=batch, tenant="acme")
    assert res.enqueued == n + dead
    return res.job_ids


@dataclass
class Ui:
    url: str
    hub: Hub
    csrf: str


@contextlib.asynccontextmanager
async def ui_server(redis: Redis, s: Settings, *, tick_s: float = 0.5) -> AsyncIterator[Ui]:
    auth = make_auth(SecretStr(TOKEN), "127.0.0.1", no_auth=False)
    app = make_app(redis, s, auth, tick_s=tick_s)
    runner = await start_site(app, "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    try:
        yield Ui(f"http://{host}:{port}", app[HUB], auth.csrf)
    finally:
        await runner.cleanup()
