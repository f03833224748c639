"""An arq worker that makes each job's model call through LiteLLM's Router: what a user would build instead of
routeq. Runs in bench/.litellm-venv (LiteLLM is never a routeq dependency), so it imports nothing of routeq.

    python bench/_litellm_worker.py REDIS_URL API_URL --strategy usage-based-routing-v2 [--rpm N]
        [--max-parallel N] [--poll-delay 0.05] [--queue NAME]

The Router keeps its usage tracking and cooldowns in the same Redis as arq (``redis_host``/``redis_port``).
A call the Router refuses for a limit (429 from its own checks) is put back with arq's ``Retry``, as a user
would do to wait for capacity rather than fail the job.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from typing import Any
from urllib.parse import urlparse

# The model price map is bundled with the package; fetching it at import reaches outside this machine.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL = "claude-haiku-4-5"
# Throughput runs: limits far above what the run can reach, so usage is tracked but never binds.
UNBOUNDED_RPM = 10_000_000


async def litellm_call(ctx: dict[str, Any], i: int) -> None:
    import litellm
    from arq.worker import Retry

    try:
        await ctx["router"].acompletion(
            model=MODEL,
            max_tokens=256,
            messages=[{"role": "user", "content": f"ovh ticket {i}: my order is late"}],
        )
    except litellm.RateLimitError as exc:
        ctx["refused"] = ctx.get("refused", 0) + 1
        raise Retry(defer=0.05) from exc


def deployment(api_url: str, rpm: int | None, max_parallel: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": f"anthropic/{MODEL}",
        "api_base": api_url,
        "api_key": "sk-bench",
        "rpm": rpm if rpm is not None else UNBOUNDED_RPM,
        "tpm": 10_000_000_000,
    }
    if max_parallel is not None:
        params["max_parallel_requests"] = max_parallel
    return {"model_name": MODEL, "litellm_params": params}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("redis_url")
    ap.add_argument("api_url")
    ap.add_argument("--strategy", default="usage-based-routing-v2")
    ap.add_argument("--rpm", type=int)
    ap.add_argument("--max-parallel", type=int)
    ap.add_argument("--poll-delay", type=float, default=0.05)
    ap.add_argument("--max-jobs", type=int, default=64)
    ap.add_argument("--queue", default="bench:litellm")
    a = ap.parse_args()

    from arq.connections import RedisSettings
    from arq.worker import Worker

    redis = urlparse(a.redis_url)

    async def startup(ctx: dict[str, Any]) -> None:
        import litellm
        from litellm import Router

        litellm.suppress_debug_info = True
        ctx["router"] = Router(
            model_list=[deployment(a.api_url, a.rpm, a.max_parallel)],
            routing_strategy=a.strategy,
            redis_host=redis.hostname,
            redis_port=redis.port,
            num_retries=0,
        )

    async def run() -> None:
        w = Worker(
            [litellm_call],
            on_startup=startup,
            queue_name=a.queue,
            redis_settings=RedisSettings.from_dsn(a.redis_url),
            poll_delay=a.poll_delay,
            max_jobs=a.max_jobs,
            max_tries=10_000,
            keep_result=0,
            log_results=False,
            handle_signals=True,
        )
        await w.async_run()

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(run())


if __name__ == "__main__":
    main()
