"""Tracing end to end: a real `routeq enqueue` process and a real `routeq worker --burst` process export
over OTLP/HTTP (protobuf) to a real receiver; the worker calls the stand-in API through the real SDK.

One trace must run from the producer's chunk span through each attempt to the model call, with the GenAI
attributes matching what the worker recorded in Redis, and no prompt text or API key in any exported
byte unless ``ROUTEQ_TRACE_CONTENT=true`` asks for the text (the key: never).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from jobs.results import JobResult, usd_float
from jobs.settings import Settings
from jobs.tiers import TOP_TIER
from tests.helpers import worker_env
from tests.otlp_receiver import OtlpReceiver, Spans, by_name, otlp_receiver
from worker.policy import pricing
from worker.sandbox import corpus
from worker.sandbox.embedded import routeq_cmd, start_mock_api

__all__ = ["otlp_receiver"]  # the fixture, re-exported so pytest finds it

pytestmark = pytest.mark.integration

FAKE_KEY = "sk-ant-api03-FAKE-routeq-e2e-KEY-do-not-leak-7f3a9c"
PROMPT_MARK = "ZEBRA-PROMPT-7731"
SYSTEM_MARK = "OKAPI-SYSTEM-4410"
DOC_MARK = "QUOKKA-DOCUMENT-2958"
QUEUE = "routeq:queue"
CREATE = f"create {QUEUE}"
SEND = f"send {QUEUE}"
# ~6k tokens: over every tier's minimum cacheable prefix, so the second job reads what the first wrote.
CONTRACT = f"{DOC_MARK} MASTER SERVICES AGREEMENT. " + (
    "The Provider shall deliver the Services with reasonable skill and care, and the Customer shall pay "
    "all undisputed invoices within thirty days of receipt. " * 160
)
JOBS: list[dict[str, Any]] = [
    {
        "task": "classify",
        "prompt": f"{PROMPT_MARK} Is this message spam? 'You won a prize, click here.'",
        "system": f"{SYSTEM_MARK} You label customer messages.",
        "constraints": {"tier": "haiku"},
    },
    {
        "task": "qa",
        "prompt": f"{PROMPT_MARK} What is the payment term?",
        "documents": [{"name": "contract.txt", "text": CONTRACT}],
    },
    {
        "task": "qa",
        "prompt": f"{PROMPT_MARK} Who must deliver the services?",
        "documents": [{"name": "contract.txt", "text": CONTRACT}],
    },
]


@pytest.fixture
def api() -> Iterator[str]:
    url, child = start_mock_api()
    try:
        yield url
    finally:
        child.stop()


def traced_env(redis_url: str, api_url: str, rx: OtlpReceiver, **extra: str) -> dict[str, str]:
    env = worker_env(
        redis_url,
        api_url,
        ANTHROPIC_API_KEY=FAKE_KEY,
        # Ask the SDK for its own spans: the client's open_telemetry=False must still win.
        ANTHROPIC_OPEN_TELEMETRY="true",
        ROUTEQ_LEARNED_ROUTER="false",
        **rx.env(),
    )
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(routeq_cmd(*argv), env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"routeq {' '.join(argv)} exited {p.returncode}:\n{p.stderr[-3000:]}"
    return p


def results(redis_url: str, job_ids: set[str]) -> dict[str, JobResult]:
    keys = Settings(redis_url=redis_url).keys
    client = redis.Redis.from_url(redis_url)
    try:
        out = {}
        for job_id in job_ids:
            raw = client.get(keys.result(job_id))
            assert raw is not None, f"no result for {job_id}"
            out[job_id] = JobResult.model_validate_json(raw)
        return out
    finally:
        client.close()


def exported_text(rx: OtlpReceiver, spans: Spans) -> list[bytes | str]:
    """Every exported byte (the raw protobuf bodies) and every decoded attribute and event value."""
    decoded = [
        orjson.dumps([s["attributes"], s["events"], s["links"], s["resource"]]).decode() for s in spans
    ]
    return [*rx.raw, *decoded]


def assert_absent(needle: str, haystack: list[bytes | str]) -> None:
    for item in haystack:
        found = needle.encode() in item if isinstance(item, bytes) else needle in item
        assert not found, f"{needle!r} was exported"


def chain_ok(spans: Spans) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The producer's single chunk span and the worker's attempt spans (by span id), links checked."""
    (send,) = by_name(spans, SEND)
    (create,) = by_name(spans, CREATE)
    assert send["kind"] == create["kind"] == "PRODUCER"
    assert send["service"] == create["service"] == "routeq-producer"
    # The chunk span starts its own trace and links back to the enqueue call's span.
    assert create["parent"] is None
    assert [(ln["trace_id"], ln["span_id"]) for ln in create["links"]] == [
        (send["trace_id"], send["span_id"])
    ]
    worker = [s for s in spans if s["service"] == "routeq-worker"]
    assert worker, "the worker exported no span"
    assert {s["trace_id"] for s in worker} == {create["trace_id"]}, "a worker span left the chunk's trace"
    attempts = {s["span_id"]: s for s in worker if s["kind"] == "CONSUMER"}
    for a in attempts.values():
        assert a["name"].startswith(f"process {QUEUE}")
        assert a["parent"] == create["span_id"], "an attempt is not a child of the chunk span"
    return create, attempts


def test_one_trace_from_enqueue_to_model_call(
    redis_url: str, api: str, otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    rx = otlp_receiver
    env = traced_env(redis_url, api, rx)
    src = tmp_path / "jobs.jsonl"
    src.write_bytes(b"".join(orjson.dumps(j) + b"\n" for j in JOBS))

    run(["enqueue", str(src), "--batch", "traced", "--tag", "tenant=acme"], env)
    # The producer flushed at exit: its spans are here before any worker runs.
    producer = rx.wait_for(lambda s: len(by_name(s, CREATE)) == 1, timeout=5)
    (send,) = by_name(producer, SEND)
    assert send["attributes"]["routeq.batch"] == "traced"
    assert send["attributes"]["routeq.tenant"] == "acme"
    assert send["attributes"]["messaging.batch.message_count"] == len(JOBS)
    assert by_name(producer, CREATE)[0]["attributes"]["messaging.batch.message_count"] == len(JOBS)

    run(["worker", "--burst"], env)  # exits when the queues are empty, flushing its spans first
    spans = rx.spans()
    create, attempts = chain_ok(spans)
    assert create["attributes"]["routeq.batch"] == "traced"

    job_ids = {a["attributes"]["routeq.job_id"] for a in attempts.values()}
    assert len(job_ids) == len(JOBS)
    for a in attempts.values():
        assert a["attributes"]["routeq.batch"] == "traced"
        assert a["attributes"]["routeq.tenant"] == "acme"
        assert a["attributes"]["messaging.system"] == "arq"
        # each paid answer's check is an event on its attempt span: score, strongest signal, decision
        checks = [e for e in a["events"] if e["name"] == "routeq.check"]
        assert all(0.0 <= e["attributes"]["routeq.check.score"] <= 1.0 for e in checks)
        assert all(e["attributes"]["routeq.check.action"] in ("keep", "escalate", "fail") for e in checks)
        if checks:
            assert a["attributes"]["routeq.check.action"] == checks[-1]["attributes"]["routeq.check.action"]

    # route: a child of an attempt, with the decision.
    routes = by_name(spans, "route")
    assert routes and all(r["parent"] in attempts for r in routes)
    for r in routes:
        attrs = r["attributes"]
        assert attrs["routeq.route.tier"] in {"haiku", "sonnet", "opus"}
        assert attrs["routeq.route.base_tier"] in {"haiku", "sonnet", "opus"}
        assert isinstance(attrs["routeq.route.score"], float) and attrs["routeq.route.reason"]
    assert any("pinned" in r["attributes"]["routeq.route.reason"] for r in routes)

    # GenAI: one CLIENT span per model call, a child of its attempt, matching what was recorded.
    s = Settings(redis_url=redis_url)
    today = dt.datetime.now(dt.UTC).date()
    chats = [sp for sp in spans if sp["kind"] == "CLIENT"]
    assert chats and all(c["parent"] in attempts for c in chats)
    recorded = results(redis_url, job_ids)
    for job_id, res in recorded.items():
        assert res.status == "done", res
        mine = sorted(
            (c for c in chats if attempts[c["parent"]]["attributes"]["routeq.job_id"] == job_id),
            key=lambda c: c["start_ns"],
        )
        assert len(mine) == len(res.attempts), job_id
        events = [
            e
            for a in attempts.values()
            if a["attributes"]["routeq.job_id"] == job_id
            for e in a["events"]
            if e["name"] == "routeq.check"
        ]
        assert len(events) == sum(1 for att in res.attempts if att.check_score is not None), job_id
        for c, att in zip(mine, res.attempts, strict=True):
            attrs, u = c["attributes"], att.usage
            assert c["name"] == f"chat {att.model}"
            assert attrs["gen_ai.operation.name"] == "chat"
            assert attrs["gen_ai.provider.name"] == "anthropic"
            assert attrs["gen_ai.request.model"] == att.model == s.model_for(att.tier)
            assert attrs["gen_ai.response.model"] == att.model
            assert (
                attrs["gen_ai.usage.input_tokens"]
                == u.input_tokens + u.cache_write_tokens + u.cache_read_tokens
            )
            assert attrs["gen_ai.usage.output_tokens"] == u.output_tokens
            assert attrs["gen_ai.usage.cache_read.input_tokens"] == u.cache_read_tokens
            assert attrs["gen_ai.usage.cache_write.input_tokens"] == u.cache_write_tokens
            assert attrs["gen_ai.response.finish_reasons"] == [att.stop_reason]
            assert attrs["routeq.cost_usd"] == pytest.approx(usd_float(att.cost.total_pusd), rel=1e-9)
            baseline = pricing.baseline_cost(s.spec_for(TOP_TIER), u, today)
            assert attrs["routeq.baseline_cost_usd"] == pytest.approx(usd_float(baseline), rel=1e-9)
            assert attrs["routeq.tier"] == att.tier.value
    # The shared contract was written once and read once: input tokens include both kinds of cached input.
    cached = [c["attributes"] for c in chats]
    assert any(a["gen_ai.usage.cache_write.input_tokens"] > 0 for a in cached)
    assert any(0 < a["gen_ai.usage.cache_read.input_tokens"] < a["gen_ai.usage.input_tokens"] for a in cached)

    # No duplicate span from the SDK's own instrumentation; only routeq's scope exports.
    assert not [sp["name"] for sp in spans if "anthropic" in sp["name"] or "messages" in sp["name"]]
    assert {sp["scope"] for sp in spans} == {"routeq"}
    # Content off: neither the prompt, the system text, the document nor the answer; never the key.
    everything = exported_text(rx, spans)
    for needle in (FAKE_KEY, PROMPT_MARK, SYSTEM_MARK, DOC_MARK):
        assert_absent(needle, everything)
    for res in recorded.values():
        if res.output and len(res.output) >= 20:
            assert_absent(res.output, everything)
    # content events are off; the only events are answer checks (scores and signal names, no text)
    assert not [e for sp in spans for e in sp["events"] if e["name"] != "routeq.check"]


def test_demo_with_otel_env_and_trace_content(otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    """`routeq demo` under OTEL env: its producer and its child workers export one trace per chunk, and
    with ROUTEQ_TRACE_CONTENT=true the prompt is recorded as a span event (the key still never)."""
    rx = otlp_receiver
    n_jobs = 8
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTEQ_", "OTEL_", "ANTHROPIC_"))}
    env.pop("REDIS_URL", None)
    env.update(rx.env())
    env.update(
        {"ROUTEQ_TRACE_CONTENT": "true", "ROUTEQ_LEARNED_ROUTER": "false", "ROUTEQ_POLL_DELAY_S": "0.02"}
    )
    out = tmp_path / "demo.jsonl"
    p = subprocess.run(
        routeq_cmd("demo", "--jobs", str(n_jobs), "--workers", "1", "--json", "--out", str(out)),
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    report = orjson.loads(p.stdout.strip().splitlines()[-1])
    assert report["jobs"] == n_jobs and report["failed"] == 0

    spans = rx.spans()  # the demo stopped its workers (which flush on exit) before returning
    _, attempts = chain_ok(spans)
    assert len({a["attributes"]["routeq.job_id"] for a in attempts.values()}) == n_jobs
    chats = [sp for sp in spans if sp["kind"] == "CLIENT"]
    assert len(chats) >= n_jobs and all(c["parent"] in attempts for c in chats)
    inputs = [e for c in chats for e in c["events"] if e["name"] == "gen_ai.input"]
    outputs = [e for c in chats for e in c["events"] if e["name"] == "gen_ai.output"]
    assert len(inputs) == len(outputs) == len(chats)
    recorded = "\n".join(e["attributes"]["gen_ai.input.messages"] for e in inputs)
    for job in corpus.generate(n_jobs):  # the demo's corpus is deterministic for a given size
        assert orjson.dumps(job["prompt"]).decode()[1:-1] in recorded, job["prompt"]
    for e in outputs:
        (msg,) = orjson.loads(e["attributes"]["gen_ai.output.messages"])
        assert msg["role"] == "assistant" and msg["parts"][0]["content"]
    assert_absent("demo-key-for-the-stand-in", exported_text(rx, spans))
