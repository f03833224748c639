"""Prompt caching end to end: one cache write per shared prefix across a fleet, and what it saves.

Real redis-server, two real worker processes, the real SDK over HTTP against the stand-in API with a
150 ms time to first token, so concurrent requests on a cold prefix really overlap (the stand-in makes a
written prefix readable only once the writing response has started, as the API does).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis as sync_redis

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.reports import batch_report
from jobs.results import JobResult, Usage, usd_float
from jobs.settings import Settings
from jobs.tiers import TOP_TIER, Tier
from tests.conftest import RedisProc
from tests.helpers import Fleet, api_stats, wait_batch
from worker.policy import cache_layout, pricing

pytestmark = pytest.mark.integration

LATENCY_MS = "150"
SYSTEM = "You are a contracts analyst. Answer from the document only."
_WORDS = (
    *("agreement", "party", "shall", "term", "notice", "liability", "clause", "licensee", "vendor"),
    *("payment", "days", "written", "consent", "breach", "cure", "period", "renewal", "fees", "data"),
)
# Both fleets run at once against one redis-server: each gets its own key prefix (queues included).
WARM_PREFIX, COLD_PREFIX = "cw", "cwoff"


def _text(seed: int, tokens: int) -> str:
    """Deterministic filler of exactly ``tokens * 4`` characters (the stand-in counts 4 chars a token)."""
    rng = random.Random(seed)
    out = " ".join(rng.choice(_WORDS) for _ in range(tokens))  # words average > 4 chars
    return out[: tokens * 4]


def _jobs(doc: str, n: int, *, tier: Tier = Tier.haiku, first: int = 0, marker: str = "") -> list[Job]:
    return [
        Job.model_validate(
            {
                "task": "qa",
                "prompt": f"Question {i}: what does clause {i} say about termination?{marker}",
                "system": SYSTEM,
                "documents": [{"name": "contract.txt", "text": doc}],
                "constraints": {"tier": tier.value},
                "max_output_tokens": 400,
            }
        )
        for i in range(first, first + n)
    ]


def _fleet_env(prefix: str, **extra: str) -> dict[str, str]:
    return {
        "ROUTEQ_KEY_PREFIX": prefix,
        "ROUTEQ_LEARNED_ROUTER": "false",
        "ROUTEQ_LIMITS__HAIKU__CONCURRENCY": "24",
        "ROUTEQ_LIMITS__SONNET__CONCURRENCY": "8",
        "ROUTEQ_LIMITS__OPUS__CONCURRENCY": "8",
        # A hung leader (the timeout fault below) gives up after 2 s; normal calls take ~0.15 s.
        "ROUTEQ_CALL_TIMEOUT_S": "2",
        "ROUTEQ_MAX_ATTEMPTS": "2",
        # Timeouts spend no attempts (they look like an outage): the hung leader gives up once they
        # have lasted 2.5 s, i.e. on its second timeout (>= 2 s call + 1 s tier pause after the first).
        "ROUTEQ_OUTAGE_PATIENCE_S": "2.5",
        "ROUTEQ_BACKOFF_BASE_S": "0.1",
        "ROUTEQ_BACKOFF_MAX_S": "0.5",
        **extra,
    }


@pytest.fixture(scope="module")
def warm_fleet(redis_proc: RedisProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Caching and warming on (the defaults); shared by the tests below, each with its own documents.

    The stand-in's Opus minimum is 8192 tokens where routeq's catalog says 4096 (the docs disagree on
    some minimums): routeq places a breakpoint the API then ignores.
    """
    conf = tmp_path_factory.mktemp("mock") / "mock.json"
    conf.write_bytes(orjson.dumps({"models": {"claude-opus-4-5": {"min_cache_tokens": 8192}}}))
    api_args = ("--latency-ms", LATENCY_MS, "--config", str(conf))
    with Fleet(redis_proc.url, workers=2, api_args=api_args, **_fleet_env(WARM_PREFIX)) as f:
        yield f
        _signal_all(f)
    _drop_prefix(redis_proc.url, WARM_PREFIX)


def _signal_all(fleet: Fleet) -> None:
    """SIGTERM every worker at once, so they drain in parallel (Fleet.stop then waits for each)."""
    for w in fleet.workers:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)


def _drop_prefix(url: str, prefix: str) -> None:
    r = sync_redis.Redis.from_url(url)
    try:
        for k in r.scan_iter(match=f"{prefix}:*", count=1000):
            r.delete(k)
    finally:
        r.close()


def _settings(url: str, prefix: str) -> Settings:
    return Settings(redis_url=url, key_prefix=prefix)


async def _run(
    s: Settings, redis: Any, jobs: list[Job], batch: str, timeout: float = 30.0
) -> list[JobResult]:
    res = await Producer(redis, s).enqueue(jobs, batch=batch)
    assert res.enqueued == len(jobs)
    await wait_batch(s, redis, batch, timeout=timeout)
    return [JobResult.model_validate_json(await redis.get(s.keys.result(j))) for j in res.job_ids]


def _model_stats(api_url: str, model: str) -> dict[str, Any]:
    got: dict[str, Any] = api_stats(api_url)["models"].get(model, {})
    return got


def _delta(after: dict[str, Any], before: dict[str, Any], key: str) -> int:
    return int(after.get(key, 0)) - int(before.get(key, 0))


def _prefix_tokens(s: Settings, job: Job, tier: Tier) -> int:
    plan = cache_layout.build_request(job, s.model_for(tier), s.spec_for(tier), ttl="5m", caching=True)
    return plan.cached_prefix_tokens


def _cli_report(s: Settings, batch: str) -> dict[str, Any]:
    env = {
        "REDIS_URL": s.redis_url or "",
        "ROUTEQ_KEY_PREFIX": s.key_prefix,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    p = subprocess.run(
        [sys.executable, "-m", "worker.cli", "report", batch, "--json"],
        capture_output=True,
        env=env,
        text=True,
        timeout=30,
    )
    assert p.returncode == 0, p.stderr
    out: dict[str, Any] = orjson.loads(p.stdout)
    return out


# --------------------------------------------------------------------------------------------------


async def test_one_write_per_prefix_across_two_workers(redis_proc: RedisProc, warm_fleet: Fleet) -> None:
    s = _settings(redis_proc.url, WARM_PREFIX)
    redis = await connect(s)
    try:
        doc = _text(1, 6000)  # > haiku's 4096-token minimum
        jobs = _jobs(doc, 40)
        prefix = _prefix_tokens(s, jobs[0], Tier.haiku)
        assert prefix >= s.spec_for(Tier.haiku).min_cache_tokens
        model = s.model_for(Tier.haiku)
        before = _model_stats(warm_fleet.api_url, model)

        results = await _run(s, redis, jobs, "warm40")

        assert {r.status for r in results} == {"done"}
        assert {r.tier for r in results} == {Tier.haiku}
        calls = [a for r in results for a in r.attempts]
        assert len(calls) == 40 and all(a.status == "ok" for a in calls)
        # exactly ONE write of the shared prefix across both workers; everyone else read it
        writers = [a for a in calls if a.usage.cache_write_tokens]
        assert len(writers) == 1, [a.usage for a in calls]
        assert sum(a.usage.cache_write_tokens for a in calls) == prefix
        assert writers[0].usage.cache_write_5m_tokens == prefix
        assert all(a.usage.cache_read_tokens == prefix for a in calls if a is not writers[0])
        assert sum(1 for r in results if r.cache.get("warming") == "leader") == 1
        # the stand-in billed the same
        after = _model_stats(warm_fleet.api_url, model)
        assert _delta(after, before, "requests") == 40
        assert _delta(after, before, "cache_write_tokens") == prefix
        assert _delta(after, before, "cache_read_tokens") == 39 * prefix
        assert _delta(after, before, "input_tokens") == sum(a.usage.input_tokens for a in calls)
        assert after.get("max_in_flight", 0) > 1  # the reads really ran concurrently

        # per-job cost traces itemise the write and the reads, priced exactly
        today = dt.datetime.now(dt.UTC).date()
        spec = s.spec_for(Tier.haiku)
        rates = spec.price_on(today)
        pico = pricing.PICO_PER_TOKEN_PER_RATE
        for a in calls:
            assert a.cost == pricing.price_call(spec, a.usage, today)
            assert a.cost.cache_write_5m_pusd == int(
                a.usage.cache_write_5m_tokens * rates.cache_write_5m * pico
            )
            assert a.cost.cache_read_pusd == int(a.usage.cache_read_tokens * rates.cache_read * pico)
            assert a.cost.cache_write_1h_pusd == 0
            assert a.usage.prompt_tokens == a.usage.input_tokens + prefix
        for r in results:
            assert r.cache.get("breakpoints") == 1 and r.cache.get("prefix_tokens") == prefix
            assert r.cache.get("ttl") == "5m"

        # the report (library and CLI) reconciles with the per-job results
        rep = await batch_report(redis, s.keys, "warm40")
        cli = _cli_report(s, "warm40")
        total = sum((a.usage for a in calls), Usage())
        cost = sum(r.cost.total_pusd for r in results)
        baseline = sum(r.baseline_cost_pusd for r in results)
        uncached = sum(r.uncached_cost_pusd for r in results)
        for got in (rep, cli):
            assert got["cost_pusd"] == cost and got["baseline_pusd"] == baseline
            row = got["tiers"]["haiku"]
            assert row["cache_write_tokens"] == prefix and row["cache_read_tokens"] == 39 * prefix
            assert got["cache_hit_rate"] == round(total.cache_read_tokens / total.prompt_tokens, 4)
            assert got["routing_savings_usd"] == usd_float(baseline - uncached)
            assert got["cache_savings_usd"] == usd_float(uncached - cost)
        assert cli["cache_hit_rate"] > 0.9
        assert uncached - cost > 0  # caching paid for its one write many times over
        top = s.spec_for(TOP_TIER)
        assert baseline == sum(pricing.baseline_cost(top, r.usage, today) for r in results)
    finally:
        await redis.aclose()


async def test_without_warming_concurrent_cold_requests_all_write(redis_proc: RedisProc) -> None:
    """The problem warming solves is real: with it off, the first concurrent wave all pay a write."""
    s = _settings(redis_proc.url, COLD_PREFIX)
    redis = await connect(s)
    env = _fleet_env(COLD_PREFIX, ROUTEQ_CACHE_WARMING="false")
    try:
        with Fleet(redis_proc.url, workers=2, api_args=("--latency-ms", LATENCY_MS), **env) as fleet:
            jobs = _jobs(_text(1, 6000), 40)  # the same jobs as the warming test
            prefix = _prefix_tokens(s, jobs[0], Tier.haiku)
            results = await _run(s, redis, jobs, "cold40")
            assert {r.status for r in results} == {"done"}
            calls = [a for r in results for a in r.attempts]
            writers = [a for a in calls if a.usage.cache_write_tokens]
            assert len(writers) >= 2, "warming off should let concurrent cold requests all write"
            assert sum(a.usage.cache_write_tokens for a in calls) == len(writers) * prefix
            stats = api_stats(fleet.api_url)["models"][s.model_for(Tier.haiku)]
            assert stats["cache_write_tokens"] == len(writers) * prefix
            assert all("warming" not in r.cache for r in results)
            # each extra write costs (1.25 - 0.10) x input per prefix token over the warmed run
            rates = s.spec_for(Tier.haiku).price_on(dt.datetime.now(dt.UTC).date())
            extra = (len(writers) - 1) * prefix * (rates.cache_write_5m - rates.cache_read)
            paid = sum(a.cost.cache_write_5m_pusd + a.cost.cache_read_pusd for a in calls)
            one_write = prefix * (rates.cache_write_5m + 39 * rates.cache_read)
            assert paid == int((one_write + extra) * pricing.PICO_PER_TOKEN_PER_RATE)
            _signal_all(fleet)
    finally:
        await redis.aclose()
        _drop_prefix(redis_proc.url, COLD_PREFIX)


async def test_below_model_minimum_no_breakpoint_no_cache_tokens(
    redis_proc: RedisProc, warm_fleet: Fleet
) -> None:
    """~2000 tokens: under haiku's 4096 minimum (nothing cached), over sonnet's 1024 (cached, one write)."""
    s = _settings(redis_proc.url, WARM_PREFIX)
    redis = await connect(s)
    try:
        doc = _text(2, 2000)
        short = _jobs(doc, 8)
        plan = cache_layout.build_request(
            short[0], s.model_for(Tier.haiku), s.spec_for(Tier.haiku), ttl="5m", caching=True
        )
        assert plan.breakpoints == 0 and "cache_control" not in orjson.dumps(plan.params).decode()
        haiku = s.model_for(Tier.haiku)
        before = _model_stats(warm_fleet.api_url, haiku)
        results = await _run(s, redis, short, "short8")
        by_id = {j.with_ids("short8").job_id: j for j in short}
        after = _model_stats(warm_fleet.api_url, haiku)
        assert {r.status for r in results} == {"done"}
        for r in results:
            assert r.usage.cache_write_tokens == 0 and r.usage.cache_read_tokens == 0
            mine = cache_layout.build_request(
                by_id[r.job_id], haiku, s.spec_for(Tier.haiku), ttl="5m", caching=True
            )
            assert r.usage.input_tokens == mine.estimated_input_tokens  # every prompt token billed as input
            assert r.cost.cache_write_5m_pusd == r.cost.cache_read_pusd == 0
            assert r.uncached_cost_pusd == r.cost.total_pusd  # no caching, no caching saving
            assert "warming" not in r.cache  # nothing to coordinate: no job waited
            assert "< model minimum 4096" in r.cache["reason"]
        assert _delta(after, before, "cache_write_tokens") == 0
        assert _delta(after, before, "cache_read_tokens") == 0
        rep = await batch_report(redis, s.keys, "short8")
        assert rep["cache_hit_rate"] == 0.0 and rep["cache_savings_usd"] == 0.0

        # The same prefix pinned to sonnet (minimum 1024) is cached: one write, the rest read.
        on_sonnet = _jobs(doc, 8, tier=Tier.sonnet)
        prefix = _prefix_tokens(s, on_sonnet[0], Tier.sonnet)
        assert 1024 <= prefix < 4096
        results = await _run(s, redis, on_sonnet, "short8-sonnet")
        calls = [a for r in results for a in r.attempts]
        assert sum(a.usage.cache_write_tokens for a in calls) == prefix
        assert sum(a.usage.cache_read_tokens for a in calls) == 7 * prefix
    finally:
        await redis.aclose()


async def test_failed_leader_hands_over_to_a_follower(redis_proc: RedisProc, warm_fleet: Fleet) -> None:
    """The leader's call hangs and times out: a follower takes the lead, one write, no deadlock."""
    s = _settings(redis_proc.url, WARM_PREFIX)
    redis = await connect(s)
    try:
        doc = _text(3, 6000)
        bad = _jobs(doc, 1, first=100, marker=" [[mock:fault-timeout]]")
        good = _jobs(doc, 20)
        prefix = _prefix_tokens(s, good[0], Tier.haiku)
        lock = s.keys.cache_warming("*")
        t0 = time.monotonic()
        # The followers are enqueued only once the leader hangs, so tell the batch up front that its
        # document is shared (as a producer enqueueing them together would): a lone document gets no
        # breakpoint and so no warming at all.
        await redis.hincrby(s.keys.batch_docs("leaderfail"), bad[0].documents[0].content_key, 20)
        res = await Producer(redis, s).enqueue(bad, batch="leaderfail")
        # wait until the doomed job holds the warming lock (its call is hanging on the stand-in)
        deadline = time.monotonic() + 15
        while not [k async for k in redis.scan_iter(match=lock)]:
            assert time.monotonic() < deadline, "the first job never claimed the prefix"
            await asyncio.sleep(0.02)
        res2 = await Producer(redis, s).enqueue(good, batch="leaderfail")
        followers_at = time.time()
        await wait_batch(s, redis, "leaderfail", timeout=30)
        elapsed = time.monotonic() - t0

        failed = JobResult.model_validate_json(await redis.get(s.keys.result(res.job_ids[0])))
        assert failed.status == "failed" and failed.error_type == "timeout", failed
        assert [a.status for a in failed.attempts] == ["error", "error"]  # MAX_ATTEMPTS=2
        results = [JobResult.model_validate_json(await redis.get(s.keys.result(j))) for j in res2.job_ids]
        assert {r.status for r in results} == {"done"}
        calls = [a for r in results for a in r.attempts]
        assert len(calls) == 20
        # one follower became the leader and wrote; the others waited for it and read
        assert sum(a.usage.cache_write_tokens for a in calls) == prefix
        assert sum(1 for a in calls if a.usage.cache_read_tokens == prefix) == 19
        assert sum(1 for r in results if r.cache.get("warming") == "leader") == 1
        # the followers arrived while the leader hung, and none of them called before it failed
        leader_failed_at = failed.attempts[0].started_at  # stamped when its call gave up
        assert followers_at < leader_failed_at
        # an answered attempt is stamped when its call returned: minus its latency, when it was sent
        assert min(a.started_at - a.latency_ms / 1000 for a in calls) > leader_failed_at - 0.05
        assert elapsed < 20, f"followers took {elapsed:.1f}s: a stuck leader should cost ~2 s"
        assert res.enqueued == 1
        stats = api_stats(warm_fleet.api_url)
        assert stats["models"][s.model_for(Tier.haiku)]["errors"].get("timeout", 0) >= 1
    finally:
        await redis.aclose()


async def test_breakpoint_the_api_ignores_does_not_serialise_jobs(
    redis_proc: RedisProc, warm_fleet: Fleet
) -> None:
    """routeq thinks the prefix is cacheable, the API caches nothing: the leader's answer must still
    release the followers together (not hand the lead on one by one, one full call each)."""
    s = _settings(redis_proc.url, WARM_PREFIX)
    redis = await connect(s)
    try:
        jobs = _jobs(_text(4, 6000), 8, tier=Tier.opus)
        assert _prefix_tokens(s, jobs[0], Tier.opus) >= s.spec_for(Tier.opus).min_cache_tokens
        opus = s.model_for(Tier.opus)
        assert _model_stats(warm_fleet.api_url, opus).get("requests", 0) == 0
        results = await _run(s, redis, jobs, "ignored8")
        assert {r.status for r in results} == {"done"}
        assert all(r.usage.cache_write_tokens == r.usage.cache_read_tokens == 0 for r in results)
        assert all(r.cost.total_pusd == r.uncached_cost_pusd for r in results)
        stats = _model_stats(warm_fleet.api_url, opus)
        assert stats["requests"] == 8
        # one leader went first; the other seven then ran together, not one after another
        assert stats["max_in_flight"] >= 2, stats
        assert sum(1 for r in results if r.cache.get("warming") == "leader") == 1
    finally:
        await redis.aclose()
