"""Prompt caching at fleet scale: cache writes per shared prefix, input cost and wall time, in one run.

    .venv/bin/python bench/cache_layout.py [--jobs 500] [--docs 5] [--doc-tokens 20000] [--workers 2]
                                    [--concurrency 16] [--latency-ms 100] [--timeout 300]

``--jobs`` questions over ``--docs`` shared documents of ``--doc-tokens`` tokens each (jobs interleaved
over the documents, so every prefix is cold at the start), all pinned to Haiku, whose fleet-wide
concurrency is ``--concurrency``, through ``--workers`` worker processes against the stand-in API with a
``--latency-ms`` time to first token. Three configurations, each on a fresh stand-in cache and its own
key prefix, with the workers up before the clock starts:

- ``warming``: caching and cache warming on (the defaults): one writer per cold prefix;
- ``no_warming``: caching on, warming off: concurrent cold requests each pay a write;
- ``caching_off``: no breakpoints, every prompt token at the input rate (the anchor).

Per configuration: cache writes per prefix (target 1 with warming), input cost (input + cache writes +
cache reads, itemised from the per-job cost traces) and its reduction against caching off (target >= 80%),
wall time (enqueue to last result) and its ratio to caching off. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Procs,
    api_reset,
    api_stats,
    emit,
    settings_for,
    wait_batch,
    wait_workers,
    worker_env,
)

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.results import JobResult, usd_float
from jobs.tiers import Tier
from worker.policy import cache_layout

CONFIGS: tuple[tuple[str, dict[str, str]], ...] = (
    ("warming", {}),
    ("no_warming", {"ROUTEQ_CACHE_WARMING": "false"}),
    ("caching_off", {"ROUTEQ_CACHING": "false"}),
)
_WORDS = (
    *("agreement", "party", "shall", "term", "notice", "liability", "clause", "licensee", "vendor"),
    *("payment", "days", "written", "consent", "breach", "cure", "period", "renewal", "fees", "data"),
)


def document(seed: int, tokens: int) -> str:
    """Exactly ``tokens * 4`` characters (the stand-in counts 4 characters a token)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(tokens))[: tokens * 4]


def make_jobs(n: int, docs: list[str]) -> list[tuple[int, Job]]:
    """(document index, job): question i is about document i % len(docs)."""
    out = []
    for i in range(n):
        d = i % len(docs)
        job = Job.model_validate(
            {
                "task": "qa",
                "prompt": f"Question {i}: what does clause {i % 97} say about termination and notice?",
                "system": "You are a contracts analyst. Answer from the document only.",
                "documents": [{"name": f"contract-{d}.txt", "text": docs[d]}],
                "constraints": {"tier": "haiku"},
                "max_output_tokens": 300,
            }
        )
        out.append((d, job))
    return out


async def run_config(
    procs: Procs, redis_url: str, api_url: str, name: str, extra: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    prefix = f"bcache-{name}"
    s = settings_for(redis_url, key_prefix=prefix)
    api_reset(api_url)  # a cold stand-in cache and zeroed counters
    env = worker_env(
        redis_url,
        api_url,
        ROUTEQ_KEY_PREFIX=prefix,
        ROUTEQ_LEARNED_ROUTER="false",
        ROUTEQ_LIMITS__HAIKU__CONCURRENCY=str(args.concurrency),
        **extra,
    )
    children = procs.workers(args.workers, env)
    redis = await connect(s)
    try:
        startup_s = await wait_workers(redis, s, args.workers)
        docs = [document(100 + d, args.doc_tokens) for d in range(args.docs)]
        placed = make_jobs(args.jobs, docs)
        t0 = time.monotonic()
        res = await Producer(redis, s).enqueue([j for _, j in placed], batch=name)
        enqueue_s = time.monotonic() - t0
        st = await wait_batch(redis, s, name, args.jobs, timeout=args.timeout)
        wall_s = time.monotonic() - t0
        doc_of = dict(zip(res.job_ids, (d for d, _ in placed), strict=True))
        results = [JobResult.model_validate_json(await redis.get(s.keys.result(j))) for j in res.job_ids]
    finally:
        await redis.aclose()
        procs.stop_children(children)

    spec = s.spec_for(Tier.haiku)
    prefix_tokens = [
        cache_layout.build_request(
            placed[d][1], s.model_for(Tier.haiku), spec, ttl="5m", caching=True
        ).cached_prefix_tokens
        for d in range(args.docs)
    ]
    writes: Counter[int] = Counter()
    write_tokens: Counter[int] = Counter()
    in_pusd = out_pusd = w_pusd = r_pusd = 0
    calls = 0
    for r in results:
        for a in r.attempts:
            calls += 1
            d = doc_of[r.job_id]
            if a.usage.cache_write_tokens:
                writes[d] += 1
                write_tokens[d] += a.usage.cache_write_tokens
            in_pusd += a.cost.input_pusd
            out_pusd += a.cost.output_pusd
            w_pusd += a.cost.cache_write_5m_pusd + a.cost.cache_write_1h_pusd
            r_pusd += a.cost.cache_read_pusd
    stats = api_stats(api_url)["models"].get(s.model_for(Tier.haiku), {})
    prompt_pusd = in_pusd + w_pusd + r_pusd
    return {
        "complete": bool(st["complete"]),
        "done": int(st["done"]),
        "failed": int(st["failed"]),
        "calls": calls,
        "wall_s": round(wall_s, 2),
        "enqueue_s": round(enqueue_s, 2),
        "worker_startup_s": round(startup_s, 2),
        "cache_writes_per_prefix": [writes[d] for d in range(args.docs)],
        "cache_write_tokens_per_prefix": [write_tokens[d] for d in range(args.docs)],
        "prefix_tokens": prefix_tokens,
        "input_cost_usd": usd_float(prompt_pusd),
        "input_cost_pusd": prompt_pusd,
        "input_cost_items_usd": {
            "input": usd_float(in_pusd),
            "cache_write": usd_float(w_pusd),
            "cache_read": usd_float(r_pusd),
        },
        "output_cost_usd": usd_float(out_pusd),
        "total_cost_usd": usd_float(prompt_pusd + out_pusd),
        "api": {
            "requests": stats.get("requests", 0),
            "max_in_flight": stats.get("max_in_flight", 0),
            "cache_write_tokens": stats.get("cache_write_tokens", 0),
            "cache_read_tokens": stats.get("cache_read_tokens", 0),
            "input_tokens": stats.get("input_tokens", 0),
        },
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "bench": "cache",
        "params": {k: v for k, v in vars(args).items()},
        "configs": {},
    }
    with Procs() as procs:
        redis = procs.redis()
        api_url = procs.api("--latency-ms", str(args.latency_ms))
        for name, extra in CONFIGS:
            out["configs"][name] = await run_config(procs, redis.url, api_url, name, extra, args)
    cfg = out["configs"]
    off = cfg["caching_off"]
    for name in ("warming", "no_warming"):
        c = cfg[name]
        c["input_cost_reduction_vs_off_pct"] = (
            round(100.0 * (1 - c["input_cost_pusd"] / off["input_cost_pusd"]), 2)
            if off["input_cost_pusd"]
            else None
        )
        c["wall_ratio_vs_off"] = round(c["wall_s"] / off["wall_s"], 3) if off["wall_s"] else None
    w = cfg["warming"]
    out["targets"] = {
        "one_write_per_prefix_with_warming": all(n == 1 for n in w["cache_writes_per_prefix"]),
        "input_cost_80pct_lower_with_warming": (w["input_cost_reduction_vs_off_pct"] or 0) >= 80.0,
        "all_complete": all(c["complete"] and c["failed"] == 0 for c in cfg.values()),
    }
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=500)
    p.add_argument("--docs", type=int, default=5)
    p.add_argument("--doc-tokens", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--latency-ms", type=float, default=100.0)
    p.add_argument("--timeout", type=float, default=300.0, help="per configuration")
    return p.parse_args(argv)


if __name__ == "__main__":
    print(emit(asyncio.run(main(parse()))))
