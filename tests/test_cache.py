from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import textwrap
import time
from collections import Counter
from typing import Any

import pytest
from redis.asyncio import Redis

from jobs.catalog import ModelSpec, load_catalog
from jobs.contract import Document, Job, OutputFormat, TaskType
from jobs.keys import Keys
from worker.fleet.cache_warmer import CacheWarmer, WarmDecision
from worker.policy.cache_layout import build_request, choose_ttl, estimate_tokens, render_document

DAY = dt.date(2026, 11, 1)
SONNET = load_catalog().spec("claude-sonnet-4-5")  # min_cache_tokens 1024
MODEL = "claude-sonnet-4-5"
LONG = "x" * 4 * 1100  # ~1100 tokens: over sonnet's 1024 minimum on its own
SHORT = "be terse"


def job(prompt: str = "Q?", system: str | None = LONG, docs: dict[str, str] | None = None, **kw: Any) -> Job:
    documents = tuple(Document(name=n, text=t) for n, t in (docs or {}).items())
    return Job(task=TaskType.qa, prompt=prompt, system=system, documents=documents, **kw)


def marks(plan_params: dict[str, Any]) -> list[tuple[str, int]]:
    """Where the cache_control markers are: ('system'|'user', block index)."""
    out = [("system", i) for i, b in enumerate(plan_params.get("system", [])) if "cache_control" in b]
    content = plan_params["messages"][0]["content"]
    out += [("user", i) for i, b in enumerate(content) if "cache_control" in b]
    return out


# --- layout and breakpoints --------------------------------------------------------------------------


def test_estimate_tokens_rounds_up() -> None:
    assert [estimate_tokens("a" * n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_system_only() -> None:
    p = build_request(job(), MODEL, SONNET, ttl="5m", caching=True)
    assert p.params["system"] == [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
    assert p.params["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Q?"}]}]
    assert p.params["model"] == MODEL
    assert (p.breakpoints, len(p.prefix_hashes), p.breakpoint_labels) == (1, 1, ["system"])
    assert p.cached_prefix_tokens == 1100
    assert p.estimated_input_tokens == 1101
    assert p.warm_hash == p.prefix_hashes[0]


def test_system_and_documents_layout() -> None:
    p = build_request(job(docs={"a": "alpha", "b": "beta"}), MODEL, SONNET, ttl="1h", caching=True)
    content = p.params["messages"][0]["content"]
    assert [b["text"] for b in content] == [
        '<document name="a">alpha</document>',
        '<document name="b">beta</document>',
        "Q?",
    ]
    # end of system, after each document; never on the job's own prompt
    assert marks(p.params) == [("system", 0), ("user", 0), ("user", 1)]
    assert content[1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert p.breakpoints == 3 and p.ttl == "1h"


def test_no_documents_no_system() -> None:
    p = build_request(job(system=None, prompt=LONG), MODEL, SONNET, ttl="5m", caching=True)
    assert "system" not in p.params
    assert marks(p.params) == [] and p.prefix_hashes == [] and p.warm_hash is None
    assert "nothing shared" in p.reason


def test_documents_without_system() -> None:
    p = build_request(job(system=None, docs={"d": LONG}), MODEL, SONNET, ttl=None, caching=True)
    assert "system" not in p.params
    assert marks(p.params) == [("user", 0)]
    assert p.params["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}  # None -> 5m


def test_at_most_four_breakpoints_keeping_the_longest() -> None:
    docs = {f"d{i}": f"text {i}" for i in range(6)}
    j = job(docs=docs, output=OutputFormat(type="json", schema={"type": "object"}))
    p = build_request(j, MODEL, SONNET, ttl="5m", caching=True)
    assert p.breakpoints == 4 and len(marks(p.params)) == 4
    assert p.breakpoint_labels == ["system", "schema", "document:d0", "document:d5"]
    assert "boundaries dropped" in p.reason


def test_minimum_length_skips_short_prefixes() -> None:
    # short system alone is under 1024 tokens; with the long document the prefix is over
    p = build_request(job(system=SHORT, docs={"d": LONG}), MODEL, SONNET, ttl="5m", caching=True)
    assert marks(p.params) == [("user", 0)]
    assert p.cached_prefix_tokens == estimate_tokens(SHORT) + estimate_tokens(render_document("d", LONG))
    # everything short: no breakpoint at all, and the reason says why
    p = build_request(job(system=SHORT, docs={"d": "tiny"}), MODEL, SONNET, ttl="5m", caching=True)
    assert marks(p.params) == [] and p.cached_prefix_tokens == 0
    assert "minimum 1024" in p.reason
    # exactly at the minimum counts
    at = "y" * 4 * 1024
    assert build_request(job(system=at), MODEL, SONNET, ttl="5m", caching=True).breakpoints == 1
    assert build_request(job(system=at[:-4]), MODEL, SONNET, ttl="5m", caching=True).breakpoints == 0


def test_haiku_minimum_is_higher() -> None:
    haiku = load_catalog().spec("claude-haiku-4-5")  # 4096
    assert build_request(job(), "claude-haiku-4-5", haiku, ttl="5m", caching=True).breakpoints == 0


def test_caching_off() -> None:
    p = build_request(job(docs={"d": LONG}), MODEL, SONNET, ttl="1h", caching=False)
    assert marks(p.params) == [] and p.breakpoints == 0 and p.reason == "caching disabled"


def test_json_instruction_is_stable_and_in_system() -> None:
    s1 = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}}}
    s2 = {"properties": {"b": {"type": "number"}, "a": {"type": "string"}}, "type": "object"}
    p1 = build_request(
        job(output=OutputFormat(type="json", schema=s1)), MODEL, SONNET, ttl="5m", caching=True
    )
    p2 = build_request(
        job(output=OutputFormat(type="json", schema=s2)), MODEL, SONNET, ttl="5m", caching=True
    )
    text = p1.params["system"][1]["text"]
    assert text.startswith("Respond with JSON matching this schema: {")
    assert '"properties":{"a":' in text
    assert p1.params["system"] == p2.params["system"]
    assert p1.prefix_hashes == p2.prefix_hashes


def test_prefix_hash_identity() -> None:
    docs = {"manual": LONG}
    a = build_request(job(prompt="one", docs=docs), MODEL, SONNET, ttl="5m", caching=True)
    b = build_request(job(prompt="two", docs=docs), MODEL, SONNET, ttl="5m", caching=True)
    assert a.prefix_hashes == b.prefix_hashes and len(a.prefix_hashes) == 2
    other_doc = build_request(
        job(prompt="one", docs={"manual": LONG + "!"}), MODEL, SONNET, ttl="5m", caching=True
    )
    assert other_doc.prefix_hashes[0] == a.prefix_hashes[0]  # the system prefix is still shared
    assert other_doc.prefix_hashes[1] != a.prefix_hashes[1]
    other_model = build_request(
        job(prompt="one", docs=docs), "claude-sonnet-4-6", SONNET, ttl="5m", caching=True
    )
    other_ttl = build_request(job(prompt="one", docs=docs), MODEL, SONNET, ttl="1h", caching=True)
    none_ttl = build_request(job(prompt="one", docs=docs), MODEL, SONNET, ttl=None, caching=True)
    assert not set(other_model.prefix_hashes) & set(a.prefix_hashes)
    assert not set(other_ttl.prefix_hashes) & set(a.prefix_hashes)
    assert none_ttl.prefix_hashes == a.prefix_hashes
    # moving the same text from system into a document is a different prefix
    moved = build_request(job(system=None, docs={"s": LONG}), MODEL, SONNET, ttl="5m", caching=True)
    assert moved.prefix_hashes[0] != a.prefix_hashes[0]


def test_document_name_is_escaped_and_max_tokens_clamped() -> None:
    assert render_document('a"b<c', "t") == '<document name="a&quot;b&lt;c">t</document>'
    p = build_request(job(max_output_tokens=100_000), MODEL, SONNET, ttl="5m", caching=True)
    assert p.params["max_tokens"] == SONNET.max_output_tokens == 64_000


# --- TTL choice -------------------------------------------------------------------------------------


def test_ttl_short_span_is_5m() -> None:
    ttl, why = choose_ttl(299, 50, SONNET, DAY)
    assert ttl == "5m" and "one 5m window" in why


def test_ttl_sparse_reuse_over_an_hour_is_1h() -> None:
    # 5 uses, 15 min apart: 5m lapses each time (5 x 3.75 = 18.75) vs one 1h write + 4 reads (6 + 1.2)
    ttl, why = choose_ttl(3600, 4, SONNET, DAY)
    assert ttl == "1h"
    assert "5m 5 write(s) ~18750000" in why and "1h 1 write(s) ~7200000" in why


def test_ttl_dense_reuse_keeps_5m_alive() -> None:
    # 1000 uses over 20 min: hits every ~1.2 s keep the 5m entry warm, one cheaper write
    assert choose_ttl(1200, 999, SONNET, DAY)[0] == "5m"


def test_ttl_no_reuse_or_gaps_beyond_an_hour_is_5m() -> None:
    assert choose_ttl(4000, 0, SONNET, DAY)[0] == "5m"
    assert choose_ttl(3 * 3600 + 60, 2, SONNET, DAY)[0] == "5m"  # gaps > 1h: 1h lapses too


def test_ttl_depends_on_rates() -> None:
    # two uses 400 s apart: on sonnet 2 x 3.75 > 6 + 0.3 -> 1h; with a 1h write at 4x input -> 5m
    assert choose_ttl(400, 1, SONNET, DAY)[0] == "1h"
    dear = ModelSpec.model_validate(
        {
            "context_window": 1000,
            "max_output_tokens": 100,
            "min_cache_tokens": 0,
            "prices": [
                {
                    "effective_from": "2026-01-01",
                    "input": "3",
                    "output": "15",
                    "cache_write_5m": "3.75",
                    "cache_write_1h": "12",
                    "cache_read": "0.3",
                }
            ],
        }
    )
    assert choose_ttl(400, 1, dear, DAY)[0] == "5m"


# --- cache warming (real redis-server) ---------------------------------------------------------------

KEYS = Keys("rqtest")
H = "deadbeef"


async def test_many_claimants_one_leader(redis_url: str) -> None:
    clients = [Redis.from_url(redis_url) for _ in range(4)]
    try:
        warmers = [CacheWarmer(clients[i % 4], KEYS, wait_s=5) for i in range(40)]
        ds = await asyncio.gather(*(w.claim(H, 300) for w in warmers))
        assert Counter(d.kind for d in ds) == {"leader": 1, "follower": 39}
        pttl = await clients[0].pttl(KEYS.cache_warming(H))
        assert 4000 < pttl <= 5000  # the lock is bounded (lock_ttl defaults to wait_s)
    finally:
        for c in clients:
            await c.aclose()


async def test_followers_released_when_marked_warm(redis_url: str) -> None:
    r = Redis.from_url(redis_url)
    try:
        leader = CacheWarmer(r, KEYS, wait_s=5)
        assert (await leader.claim(H, 300)).kind == "leader"
        followers = [CacheWarmer(r, KEYS, wait_s=5, poll_s=0.02) for _ in range(10)]
        tasks = [asyncio.create_task(f.acquire(H, 300)) for f in followers]
        await asyncio.sleep(0.2)
        assert not any(t.done() for t in tasks)  # they wait while the leader writes
        t0 = time.monotonic()
        await leader.mark_warm(H, 300)
        ds = await asyncio.gather(*tasks)
        assert time.monotonic() - t0 < 1.0  # polled at 20 ms; generous for a loaded machine
        assert all(d.kind == "warm" for d in ds)
        assert await r.exists(KEYS.cache_warming(H)) == 0  # mark_warm freed the leader's lock
        assert 299_000 < await r.pttl(KEYS.cache_warm(H)) <= 300_000
        await leader.mark_warm(H, 300, age_s=30)  # the API's TTL started when the request was sent
        assert 269_000 < await r.pttl(KEYS.cache_warm(H)) <= 270_000
        # a later claim is warm at once and refreshes the marker's PX
        await r.pexpire(KEYS.cache_warm(H), 1000)
        assert (await leader.claim(H, 300)).kind == "warm"
        assert await r.pttl(KEYS.cache_warm(H)) > 299_000
    finally:
        await r.aclose()


async def test_abandon_hands_over_to_one_follower(redis_url: str) -> None:
    r = Redis.from_url(redis_url)
    try:
        first = CacheWarmer(r, KEYS, wait_s=5)
        assert (await first.claim(H, 300)).kind == "leader"
        followers = [CacheWarmer(r, KEYS, wait_s=5, poll_s=0.02) for _ in range(8)]
        tasks = [asyncio.create_task(f.acquire(H, 300)) for f in followers]
        await asyncio.sleep(0.1)
        await first.abandon(H)
        await asyncio.wait(tasks, timeout=3, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(0.1)  # room for a wrong second leader to show up
        done = [t.result() for t in tasks if t.done()]
        assert [d.kind for d in done] == ["leader"]  # exactly one took over; the rest still wait
        new_leader = followers[tasks.index(next(t for t in tasks if t.done()))]
        await new_leader.mark_warm(H, 300)
        rest = await asyncio.gather(*tasks)
        assert Counter(d.kind for d in rest) == {"leader": 1, "warm": 7}
    finally:
        await r.aclose()


async def test_leader_death_recovers_within_lock_bound(redis_url: str) -> None:
    r = Redis.from_url(redis_url)
    try:
        dead = CacheWarmer(r, KEYS, wait_s=5, lock_ttl_s=0.3)
        assert (await dead.claim(H, 300)).kind == "leader"  # ...and never marks nor abandons
        t0 = time.monotonic()
        d = await CacheWarmer(r, KEYS, wait_s=5, lock_ttl_s=0.3, poll_s=0.02).acquire(H, 300)
        elapsed = time.monotonic() - t0
        assert d.kind == "leader" and d.token
        assert 0.2 < elapsed < 1.5  # lock PX 0.3 s; far below wait_s=5
    finally:
        await r.aclose()


async def test_wait_is_bounded_by_timeout(redis_url: str) -> None:
    r = Redis.from_url(redis_url)
    try:
        assert (await CacheWarmer(r, KEYS, wait_s=60).claim(H, 300)).kind == "leader"
        w = CacheWarmer(r, KEYS, wait_s=60, poll_s=0.02)
        t0 = time.monotonic()
        assert await w.wait_warm(H, 0.2) is False
        assert await w.acquire(H, 300, timeout_s=0.2) == WarmDecision("timeout", H)
        assert 0.35 < time.monotonic() - t0 < 1.5
        # no lock and no marker: wait_warm returns at once so the caller can lead
        t0 = time.monotonic()
        assert await w.wait_warm("other", 5) is False
        assert time.monotonic() - t0 < 0.2
    finally:
        await r.aclose()


async def test_stale_leader_cannot_free_a_newer_lock(redis_url: str) -> None:
    r = Redis.from_url(redis_url)
    try:
        old = CacheWarmer(r, KEYS, wait_s=5, lock_ttl_s=0.1)
        d_old = await old.claim(H, 300)
        await asyncio.sleep(0.15)  # its lock expired
        new = CacheWarmer(r, KEYS, wait_s=5)
        d_new = await new.claim(H, 300)
        assert d_old.kind == d_new.kind == "leader" and d_old.token != d_new.token
        await old.abandon(H)
        assert await r.get(KEYS.cache_warming(H)) == (d_new.token or "").encode()
        # the stale leader's success still marks the prefix warm, but leaves the new lock alone
        await old.mark_warm(H, 300, token=d_old.token)
        assert await r.exists(KEYS.cache_warm(H)) == 1
        assert await r.get(KEYS.cache_warming(H)) == (d_new.token or "").encode()
        await new.mark_warm(H, 300, token=d_new.token)
        assert await r.exists(KEYS.cache_warming(H)) == 0
    finally:
        await r.aclose()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from redis.asyncio import Redis
    from jobs.keys import Keys
    from worker.fleet.cache_warmer import CacheWarmer

    async def one(r):
        w = CacheWarmer(r, Keys("rqtest"), wait_s=10, poll_s=0.02)
        d = await w.acquire("shared", 300)
        if d.kind == "leader":
            await asyncio.sleep(0.3)  # the model call that writes the prefix
            await w.mark_warm("shared", 300)
        return d.kind

    async def main():
        r = Redis.from_url(sys.argv[1])
        while not await r.exists("rqtest:go"):
            await asyncio.sleep(0.01)
        kinds = await asyncio.gather(*(one(r) for _ in range(10)))
        print(" ".join(kinds))
        await r.aclose()

    asyncio.run(main())
    """
)


async def test_across_processes_one_write(redis_url: str) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, redis_url], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    r = Redis.from_url(redis_url)
    try:
        await asyncio.sleep(0.8)  # let them import and start polling for the go signal
        await r.set("rqtest:go", "1")
        outs = [p.communicate(timeout=20)[0] for p in procs]
    finally:
        await r.aclose()
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs)
    kinds = Counter(k for out in outs for k in out.split())
    assert kinds == {"leader": 1, "warm": 29}


@pytest.mark.parametrize("ttl", ["5m", "1h"])
def test_plan_ttl_marker(ttl: str) -> None:
    p = build_request(job(), MODEL, SONNET, ttl=ttl, caching=True)  # type: ignore[arg-type]
    assert ("ttl" in p.params["system"][0]["cache_control"]) is (ttl == "1h")


def test_documents_no_other_job_shares_get_no_breakpoint() -> None:
    from jobs.catalog import load_catalog
    from jobs.contract import Job
    from worker.policy.cache_layout import build_request

    spec = load_catalog().spec("claude-sonnet-4-5")
    job = Job.model_validate(
        {
            "task": "summarize",
            "prompt": "Summarise.",
            "documents": [{"name": "a.txt", "text": "word " * 3000}],
        }
    )
    key = job.documents[0].content_key
    shared = build_request(job, "claude-sonnet-4-5", spec, ttl="5m", caching=True)
    alone = build_request(job, "claude-sonnet-4-5", spec, ttl="5m", caching=True, unshared=frozenset({key}))
    assert shared.breakpoints == 1 and shared.breakpoint_labels == ["document:a.txt"]
    assert alone.breakpoints == 0 and alone.prefix_hashes == []
    assert "cache_control" not in str(alone.params)
