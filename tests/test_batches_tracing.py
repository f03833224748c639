"""Message Batches mode in traces: real worker processes export over OTLP/HTTP to the in-repo receiver.

Each API batch's create span links to the attempt spans that gathered its requests; each job's result
span, in that job's trace, links back to the API batch's span.
"""

from __future__ import annotations

import pytest

from jobs.connections import connect
from jobs.producer import Producer
from jobs.settings import Settings
from jobs.sources import parse_job
from tests.helpers import Fleet, wait_batch
from tests.otlp_receiver import OtlpReceiver, by_name, otlp_receiver
from tests.test_batches_e2e import FAST, with_mode
from worker.observe import tracing

__all__ = ["otlp_receiver"]  # the fixture, re-exported so pytest finds it

pytestmark = pytest.mark.integration
MODEL = "claude-haiku-4-5"
ATTEMPT = tracing.attempt_span_name("routeq:queue")


async def test_each_jobs_result_span_links_its_api_batch(redis_url: str, otlp_receiver: OtlpReceiver) -> None:
    rx = otlp_receiver
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    mk = [
        {"task": "summarize", "prompt": f"Summarise {i}: it rained.", "constraints": {"tier": "haiku"}}
        for i in range(4)
    ]
    env = {**FAST, "ROUTEQ_BATCH_WINDOW_S": "1.0", **rx.env()}
    try:
        with Fleet(redis_url, workers=2, api_args=("--batch-latency-s", "0.3"), **env):
            res = await Producer(redis, s).enqueue([parse_job(with_mode(j, "batch")) for j in mk], batch="tr")
            await wait_batch(s, redis, "tr", timeout=60)
            spans = rx.wait_for(
                lambda sp: len(by_name(sp, tracing.batch_result_span_name(MODEL))) >= len(mk), timeout=20
            )
    finally:
        await redis.aclose()
    api_batches = {b["attributes"]["anthropic.message.batch.id"]: b for b in by_name(spans, f"batch {MODEL}")}
    assert api_batches
    attempts = {s["span_id"]: s for s in by_name(spans, ATTEMPT)}
    results = by_name(spans, tracing.batch_result_span_name(MODEL))
    assert sorted(r["attributes"]["routeq.job_id"] for r in results) == sorted(res.job_ids)
    for r in results:
        assert r["kind"] == "CONSUMER" and r["attributes"]["routeq.batch.result"] == "succeeded"
        api_batch = api_batches[r["attributes"]["anthropic.message.batch.id"]]
        # In the job's own trace, under the attempt that gathered its request ...
        parent = attempts[r["parent"]]
        assert (
            parent["trace_id"] == r["trace_id"]
            and parent["attributes"]["routeq.job_id"] == (r["attributes"]["routeq.job_id"])
        )
        # ... and linked to the API batch that answered it, which links back to that attempt.
        assert [(ln["trace_id"], ln["span_id"]) for ln in r["links"]] == [
            (api_batch["trace_id"], api_batch["span_id"])
        ]
        assert (parent["trace_id"], parent["span_id"]) in {
            (ln["trace_id"], ln["span_id"]) for ln in api_batch["links"]
        }
