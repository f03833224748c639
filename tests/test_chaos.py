"""Nothing lost: a dead worker's jobs come back in seconds, and a short chaos run loses and double-bills none.

Billed twice, precisely. For each job the stand-in counts the successful (200) responses it served with
that job's ``x-routeq-job-id`` (``served``); routeq records each paid call as an attempt with status
``ok`` or ``check_failed`` in ``routeq:attempts:<id>`` (``recorded``). A response can be served and
never recorded only when the worker that made the call died between the stand-in counting it and the
attempt reaching Redis: an *in-flight loss to a kill*. So a job's allowance is the number of SIGKILLs
that caught it running (its arq id in the killed worker's ``recovery:jobs:<owner>`` set, read while
that worker was SIGSTOPped just before the kill). A job is **billed twice** when
``served - recorded > allowance``. ``served < recorded`` would be routeq inventing a paid call: also a
failure.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from typing import Any

import orjson
import pytest

from jobs.connections import connect
from jobs.contract import Job
from jobs.keys import Keys
from jobs.producer import Producer
from jobs.reports import batch_report, batch_status, dead_letters
from jobs.results import Attempt, JobResult
from jobs.settings import Settings
from jobs.tiers import TIER_ORDER
from tests.conftest import RedisProc
from tests.helpers import Fleet, api_stats
from worker.fleet.recovery import Recovery
from worker.fleet.store import call_json, parse_calls
from worker.sandbox.embedded import Child

pytestmark = pytest.mark.integration


def _pid_of(token: bytes | None) -> int | None:
    if not token or token == b"1":
        return None
    return int(token.decode().split(":")[1])  # "<host>:<pid>:<start nonce>:<token nonce>"


def _child_with_pid(fleet: Fleet, pid: int) -> Child:
    return next(c for c in fleet.workers if c.proc.pid == pid)


async def _wait(pred: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await pred():
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise TimeoutError(what)


# --- the reaper, in process ---------------------------------------------------------------------------


async def test_reaper_spares_a_slow_owner_and_reaps_a_dead_one(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    rk = s.keys
    a = Recovery(redis, redis_url, s.keys, "hostA:1:aaaa", ttl_s=1.0, beat_s=0.2, scan_s=0.1, grace_s=0.3)
    b = Recovery(redis, redis_url, s.keys, "hostB:2:bbbb", ttl_s=1.0, beat_s=0.2, scan_s=0.1, grace_s=0.3)
    try:
        await a.start()
        await b.start()
        # A owns j1 and a lease; j2 is in A's set but another worker holds it now (a stale entry).
        await redis.set("arq:in-progress:j1", "hostA:1:aaaa")
        await redis.set("arq:in-progress:j2", "hostC:3:cccc")
        await redis.sadd(rk.recovery_running("hostA:1:aaaa"), "j1", "j2")
        await redis.zadd(s.keys.leases("haiku"), {"hostA:1:0123": 1e15, "hostB:2:4567": 1e15})
        # A and B each have a job waiting in the opus line; A's would be handed slots it cannot use.
        await redis.zadd(s.keys.line("opus"), {"hostA:1:9999|0|0": 1, "hostB:2:8888|0|0": 2})
        # A's event loop stalls for 2.5 heartbeat TTLs: its heartbeat thread keeps it alive.
        time.sleep(2.5)
        for _ in range(6):
            assert await b.scan() == [] and b.reaped == []
            await asyncio.sleep(0.1)
        assert await redis.get("arq:in-progress:j1") == b"hostA:1:aaaa"
        # A dies (its heartbeat stops without deregistering): B reaps it within ttl + grace.
        await asyncio.to_thread(a.heartbeat.stop)
        t0 = time.monotonic()
        reaped: list[tuple[str, int, int]] = []
        while not reaped and time.monotonic() - t0 < 5:
            reaped = (await b.scan()) or list(b.reaped)  # B's own reaper task may get there first
            await asyncio.sleep(0.05)
        assert reaped == [("hostA:1:aaaa", 1, 1)]
        assert time.monotonic() - t0 < 1.0 + 0.3 + 0.5
        assert await redis.get("arq:in-progress:j1") is None
        assert await redis.get("arq:in-progress:j2") == b"hostC:3:cccc"  # not A's claim: untouched
        assert await redis.zrange(s.keys.leases("haiku"), 0, -1) == [b"hostB:2:4567"]
        assert await redis.zrange(s.keys.line("opus"), 0, -1) == [b"hostB:2:8888|0|0"]
        assert not await redis.sismember(rk.recovery_owners, "hostA:1:aaaa")
        assert await redis.sismember(rk.recovery_owners, "hostB:2:bbbb")
    finally:
        await b.close()
        await a.close()
        await redis.aclose()


# --- a real worker SIGKILLed mid-call ------------------------------------------------------------------


async def test_sigkilled_worker_job_reruns_within_seconds(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    env = {"ROUTEQ_LEARNED_ROUTER": "false", "ROUTEQ_CACHING": "false"}
    with Fleet(redis_url, workers=2, api_args=("--latency-ms", "2500"), **env) as fleet:
        try:
            await wait_workers(redis, s, 2)
            job = Job.model_validate({"task": "classify", "prompt": "Is this spam? Labels: spam, ham"})
            res = await Producer(redis, s).enqueue([job], batch="kill1")
            jid = res.job_ids[0]
            ip = f"arq:in-progress:{jid}"

            async def mid_call() -> bool:
                m = api_stats(fleet.api_url)["models"]
                return bool(await redis.get(ip)) and any(v["in_flight"] for v in m.values())

            await _wait(mid_call, 20, "job never reached the API")
            token = await redis.get(ip)
            pid = _pid_of(token)
            assert pid is not None, token  # the claim carries its owner's token
            victim = _child_with_pid(fleet, pid)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(5)
            t_kill = time.monotonic()

            async def reclaimed() -> bool:
                got = await redis.get(ip)
                return got is not None and got != token

            t_back = await _wait(reclaimed, 15, "the dead worker's job was not re-run")
            assert t_back - t_kill < 6.0, f"re-run took {t_back - t_kill:.1f}s"
            await _wait(lambda: _done(redis, s, "kill1"), 20, "job did not finish")
            result = JobResult.model_validate_json(await redis.get(s.keys.result(jid)))
            assert result.status == "done"
            # the killed call was never answered, so it was not billed: one paid call in all
            assert api_stats(fleet.api_url)["jobs"].get(jid) == 1
            assert [a.status for a in result.attempts] == ["ok"]
            # the dead worker's tier lease was freed by the reaper, not left for lease_ttl_s
            for t in TIER_ORDER:
                members = await redis.zrange(s.keys.leases(t), 0, -1)
                assert not [
                    m for m in members if m.decode().startswith(f"{token.decode().rsplit(':', 1)[0]}:")
                ]
        finally:
            await redis.aclose()


async def wait_workers(redis: Any, s: Settings, n: int, timeout: float = 90.0) -> None:
    """Until n worker processes have registered (start-up is slow on a loaded machine)."""
    rk = s.keys

    async def up() -> bool:
        return bool(await redis.scard(rk.recovery_owners) >= n)

    await _wait(up, timeout, f"{n} workers did not come up")


async def _done(redis: Any, s: Settings, batch: str) -> bool:
    st = await batch_status(redis, s.keys, batch)
    return bool(st["enqueued"] and st["pending"] == 0)


# --- a short chaos run -----------------------------------------------------------------------------------

CHAOS_FAULTS = "429=0.01,529=0.005,500=0.01,503=0.005,timeout=0.01,reset=0.01"


def chaos_jobs(n: int, seed: int = 11) -> list[Job]:
    tasks = ["classify", "summarize", "extract", "translate", "qa", "reason"]
    out = []
    for i in range(n):
        task = tasks[(i * 7 + seed) % len(tasks)]
        body: dict[str, Any] = {
            "task": task,
            "prompt": f"Item {i} (seed {seed}): handle this {task} request.",
        }
        if task == "classify":
            body["prompt"] += "\nLabels: urgent, normal, spam"
        if task == "extract":
            body["output"] = {
                "type": "json",
                "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
            }
            body["prompt"] += (
                " Answer in JSON matching this schema: " + orjson.dumps(body["output"]["schema"]).decode()
            )
        body["max_output_tokens"] = 300
        out.append(Job.model_validate(body))
    return out


async def kill_one(redis: Any, rk: Keys, victim: Child) -> set[str]:
    """SIGSTOP the worker, read what it holds, SIGKILL it: returns the job ids caught in flight."""
    victim.proc.send_signal(signal.SIGSTOP)
    owners = [o.decode() for o in await redis.smembers(rk.recovery_owners)]
    mine = [o for o in owners if o.split(":")[1] == str(victim.proc.pid)]
    held: set[str] = set()
    for o in mine:
        held |= {m.decode().split(".")[0] for m in await redis.smembers(rk.recovery_running(o))}
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(5)
    return held


async def audit(
    redis: Any, s: Settings, batch: str, api_url: str, in_flight_kills: dict[str, int]
) -> dict[str, Any]:
    """Every figure of the nothing-lost check for one batch (shared with bench/chaos.py)."""
    ids = sorted(m.decode() for m in await redis.smembers(s.keys.batch_jobs(batch)))
    results: dict[str, JobResult] = {}
    lost: list[str] = []
    for j in ids:
        raw = await redis.get(s.keys.result(j))
        if raw is None:
            lost.append(j)
        else:
            results[j] = JobResult.model_validate_json(raw)
    dead = await dead_letters(redis, s.keys, batch)
    stats = api_stats(api_url)
    served: dict[str, int] = stats["jobs"]
    billed_twice, invented, in_flight_losses = [], [], 0
    recorded_attempts: dict[str, list[Attempt]] = {}
    for j in ids:
        atts, _ = parse_calls(await redis.hgetall(s.keys.calls(j)))
        recorded_attempts[j] = atts
        paid = sum(1 for a in atts if a.status != "error")
        extra = served.get(j, 0) - paid
        if extra < 0:
            invented.append(j)
        elif extra > in_flight_kills.get(j, 0):
            billed_twice.append(j)
        in_flight_losses += max(0, extra)
    failed = {j: r for j, r in results.items() if r.status == "failed"}
    causes: dict[str, int] = {}
    for r in failed.values():
        causes[r.error_type or "?"] = causes.get(r.error_type or "?", 0) + 1
    no_cause = [j for j in failed if j not in dead or not dead[j].get("error")]
    rep = await batch_report(redis, s.keys, batch)
    per_job_cost = sum(r.cost.total_pusd for r in results.values())
    # the result's attempts are the attempts list at the time of recording
    trace_mismatch = [j for j, r in results.items() if len(r.attempts) != len(recorded_attempts[j])]
    # the stand-in's own token counts vs routeq's recorded paid attempts, per model
    tokens: dict[str, dict[str, int]] = {}
    for model, m in stats["models"].items():
        mine = [
            a for atts in recorded_attempts.values() for a in atts if a.model == model and a.status != "error"
        ]
        tokens[model] = {
            "standin_output": m["output_tokens"],
            "routeq_output": sum(a.usage.output_tokens for a in mine),
            "standin_input": m["input_tokens"] + m["cache_write_tokens"] + m["cache_read_tokens"],
            "routeq_input": sum(
                a.usage.input_tokens + a.usage.cache_write_tokens + a.usage.cache_read_tokens for a in mine
            ),
        }
    return {
        "enqueued": len(ids),
        "done": sum(1 for r in results.values() if r.status == "done"),
        "dead_lettered": len(failed),
        "dead_causes": causes,
        "dead_without_cause": len(no_cause),
        "lost": len(lost),
        "billed_twice": len(billed_twice),
        "invented_paid_calls": len(invented),
        "in_flight_losses_to_kills": in_flight_losses,
        "jobs_caught_by_kills": sum(1 for v in in_flight_kills.values() if v),
        "trace_mismatch": len(trace_mismatch),
        "report_cost_pusd": rep["cost_pusd"],
        "per_job_cost_pusd": per_job_cost,
        "report_matches_jobs": rep["cost_pusd"] == per_job_cost
        and rep["done"] + rep["failed"] == len(results),
        "tokens": tokens,
    }


async def test_chaos_kill_and_redis_restart_lose_nothing() -> None:
    rp = RedisProc(appendonly=True)
    rp.start()
    s = Settings(redis_url=rp.url)
    redis = await connect(s)
    rk = s.keys
    n = 240
    env = {
        "ROUTEQ_LEARNED_ROUTER": "false",
        "ROUTEQ_CALL_TIMEOUT_S": "1.5",
        "ROUTEQ_BACKOFF_BASE_S": "0.05",
        "ROUTEQ_BACKOFF_MAX_S": "0.5",
        "ROUTEQ_LEASE_TTL_S": "6",
    }
    api_args = ("--faults", CHAOS_FAULTS, "--seed", "5", "--latency-ms", "40")
    kills: dict[str, int] = {}
    try:
        with Fleet(rp.url, workers=3, api_args=api_args, **env) as fleet:
            await wait_workers(redis, s, 3)
            res = await Producer(redis, s).enqueue(chaos_jobs(n), batch="chaos")
            assert res.enqueued == n

            async def finished(k: int) -> bool:
                st = await batch_status(redis, s.keys, "chaos")
                return bool(st["done"] + st["failed"] >= k)

            await _wait(lambda: finished(n // 4), 40, "no progress before the kill")
            for j in await kill_one(redis, rk, fleet.workers[0]):
                kills[j] = kills.get(j, 0) + 1
            fleet.add_worker()
            await _wait(lambda: finished(n // 2), 40, "no progress after the kill")
            rp.restart()  # AOF on: what Redis acknowledged survives; everyone reconnects
            await _wait(lambda: _done(redis, s, "chaos"), 45, "batch did not finish after the restart")
            got = await audit(redis, s, "chaos", fleet.api_url, kills)
            faults = api_stats(fleet.api_url)["faults"]
        assert got["enqueued"] == n
        assert got["lost"] == 0, got
        assert got["done"] + got["dead_lettered"] == n, got
        assert got["dead_without_cause"] == 0, got
        assert got["billed_twice"] == 0, got
        assert got["invented_paid_calls"] == 0, got
        assert got["trace_mismatch"] == 0, got
        assert got["report_matches_jobs"], got
        for model, t in got["tokens"].items():
            # the stand-in billed what routeq recorded, plus only what was lost in flight to the kill
            assert t["standin_output"] >= t["routeq_output"], (model, got)
            if not got["in_flight_losses_to_kills"]:
                assert t["standin_output"] == t["routeq_output"], (model, got)
        # faults really happened, and the queues are empty
        assert sum(faults.values()) >= n // 50, faults
        for q in (s.keys.intake_queue, *(s.keys.tier_queue(t) for t in TIER_ORDER)):
            assert await redis.zcard(q) == 0
    finally:
        await redis.aclose()
        rp.stop()
        shutil.rmtree(rp.dir, ignore_errors=True)


async def test_a_first_delivery_with_a_saved_paid_answer_reuses_it(redis_url: str) -> None:
    # A first delivery skips loading calls only when its claim saw none: one whose calls hash holds a
    # paid answer (written here as a run that died before its record would have left it) records that
    # answer without calling the API; a job without one is called as usual.
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        jobs = [
            Job.model_validate({"task": "classify", "prompt": f"Is this spam {i}? Labels: spam, ham"})
            for i in range(2)
        ]
        res = await Producer(redis, s).enqueue(jobs, batch="paid1")
        paid_id, plain_id = res.job_ids
        attempt = Attempt(n=1, tier="haiku", model=s.model_for("haiku"), status="ok", started_at=time.time())
        answer = {"text": "ham", "stop_reason": "end_turn"}
        await redis.hset(s.keys.calls(paid_id), "1", call_json(attempt, answer))
        env = {"ROUTEQ_LEARNED_ROUTER": "false", "ROUTEQ_CACHING": "false"}
        with Fleet(redis_url, workers=1, **env) as fleet:
            await _wait(lambda: _done(redis, s, "paid1"), 60, "jobs did not finish")
            served = api_stats(fleet.api_url)["jobs"]
        assert paid_id not in served and served.get(plain_id) == 1
        got = JobResult.model_validate_json(await redis.get(s.keys.result(paid_id)))
        assert (got.status, got.output, [a.n for a in got.attempts]) == ("done", "ham", [1])
    finally:
        await redis.aclose()
