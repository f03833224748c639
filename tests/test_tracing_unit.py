"""Tracing helpers, in process, exporting over real OTLP/HTTP to the test receiver."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from anthropic import AsyncAnthropic
from opentelemetry.trace import get_current_span

from jobs import telemetry
from jobs.contract import Job, TaskType
from jobs.results import RouteRecord, Usage
from jobs.tiers import Tier
from tests.otlp_receiver import OtlpReceiver, Spans, by_name, otlp_receiver
from worker.observe import tracing

__all__ = ["otlp_receiver"]  # the fixture, re-exported so pytest finds it

SECRET_KEY = "sk-ant-api03-SECRET-do-not-leak-0123456789"
QUEUE = "routeq:queue"

_OTEL_VARS = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SERVICE_NAME",
    "OTEL_SDK_DISABLED",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for v in _OTEL_VARS:
        monkeypatch.delenv(v, raising=False)
    yield monkeypatch
    telemetry.shutdown_tracing()


@pytest.fixture
def traced(clean_env: pytest.MonkeyPatch, otlp_receiver: OtlpReceiver) -> Iterator[OtlpReceiver]:
    for k, v in otlp_receiver.env().items():
        clean_env.setenv(k, v)
    assert telemetry.setup_tracing("routeq-test")
    yield otlp_receiver
    telemetry.shutdown_tracing()  # while the receiver still listens, or the exporter retries for seconds


def flush() -> None:
    provider = telemetry.tracer_provider()
    assert provider is not None
    assert provider.force_flush(5000)


def make_job(i: int = 0, carrier: dict[str, str] | None = None) -> Job:
    job = Job(task=TaskType.summarize, prompt=f"Summarise document {i}", system="Be brief.")
    job = job.with_ids("b1", tenant="acme")
    if carrier is not None:
        job = job.model_copy(update={"trace_context": carrier})
    return Job.from_wire(job.to_wire())  # as the worker sees it after the queue


def run_attempt(job: Job, *, trace_content: bool = False) -> None:
    """What the pipeline does for one attempt, minus the work."""
    record = RouteRecord(
        tier=Tier.sonnet, base_tier=Tier.haiku, score=0.61, learned_score=0.7, reason="rule+ml"
    )
    usage = Usage(input_tokens=100, output_tokens=40, cache_write_5m_tokens=1000, cache_read_tokens=2000)
    messages = [{"role": "user", "content": [{"type": "text", "text": job.prompt}]}]
    with tracing.attempt_span(job, job_try=2, queue=QUEUE):
        with tracing.route_span() as span:
            tracing.set_route(span, record)
        with tracing.wait_span("slot", Tier.sonnet):
            pass
        with tracing.genai_span(
            "claude-sonnet-4-5",
            512,
            tier=Tier.sonnet,
            messages=messages,
            system=job.system,
            trace_content=trace_content,
        ) as span:
            tracing.record_genai_result(
                span,
                response_model="claude-sonnet-4-5-20250929",
                response_id="msg_01",
                usage=usage,
                finish_reason="end_turn",
                cost_pusd=1_234_000_000,
                baseline_cost_pusd=5_000_000_000,
                tier=Tier.sonnet,
                output_text="ANSWER-TEXT",
                trace_content=trace_content,
            )


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4317"}, ["otlp_proto_grpc"]),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ["otlp_proto_http"],
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:4318/v1/traces",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            ["otlp_proto_http"],
        ),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4317"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4317"}, []),
    ],
)
def test_exporter_names_follow_otel_env(env: dict[str, str], expected: list[str]) -> None:
    assert telemetry.exporter_names(env) == expected


def test_bad_protocol_is_an_error() -> None:
    with pytest.raises(ValueError, match="protocol"):
        telemetry.exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_EXPORTER_OTLP_PROTOCOL": "udp"})


def test_off_without_config_installs_nothing(clean_env: pytest.MonkeyPatch) -> None:
    assert telemetry.setup_tracing("routeq-test") is False
    assert not telemetry.tracing_enabled()
    with telemetry.enqueue_span("b1", 1) as span:
        assert not span.is_recording()
        assert telemetry.inject_context() == {}
    with telemetry.job_span("j1", "b1") as carrier:
        assert carrier == {}
    with tracing.attempt_span(make_job(), 1) as span:
        assert not span.is_recording()


# --- producer -> worker -------------------------------------------------------------------------


def test_extract_gives_the_producer_trace(traced: OtlpReceiver) -> None:
    with telemetry.enqueue_span("b1", 1) as span:
        carrier = telemetry.inject_context()
    ctx = tracing.extract_context(make_job(0, carrier).trace_context)
    extracted = get_current_span(ctx).get_span_context()
    assert extracted.trace_id == span.get_span_context().trace_id
    assert extracted.span_id == span.get_span_context().span_id
    assert extracted.is_remote
    assert tracing.producer_link({}) is None
    assert tracing.producer_link({"traceparent": "garbage"}) is None


def test_producer_to_worker_one_trace_per_chunk(traced: OtlpReceiver) -> None:
    with (
        telemetry.enqueue_span("b1", 3, queue=QUEUE, tenant="acme"),
        telemetry.chunk_span("b1", 3, QUEUE) as carrier,  # once per chunk, shared by its jobs
    ):
        jobs = [make_job(i, carrier) for i in range(3)]
    for job in jobs:
        run_attempt(job)
    flush()
    spans = traced.wait_for(lambda s: len(by_name(s, "chat claude-sonnet-4-5")) == 3)

    (send,) = by_name(spans, f"send {QUEUE}")
    assert send["kind"] == "PRODUCER" and send["attributes"]["messaging.batch.message_count"] == 3
    (create,) = by_name(spans, f"create {QUEUE}")
    assert create["parent"] is None  # the chunk starts a trace, linked to the enqueue call's span
    (link,) = create["links"]
    assert (link["trace_id"], link["span_id"]) == (send["trace_id"], send["span_id"])
    attempts = by_name(spans, tracing.attempt_span_name(QUEUE))
    assert len(attempts) == 3
    assert {a["trace_id"] for a in attempts} == {create["trace_id"]}  # one trace per chunk
    for a in attempts:
        assert a["kind"] == "CONSUMER" and a["parent"] == create["span_id"] and not a["links"]
        attrs = a["attributes"]
        assert (
            attrs["routeq.job_id"].startswith("j") and attrs["messaging.message.id"] == attrs["routeq.job_id"]
        )
        assert attrs["routeq.try"] == 2
        assert attrs["routeq.batch"] == "b1"
        assert attrs["routeq.tenant"] == "acme"
        assert attrs["routeq.task"] == "summarize"
        assert attrs["messaging.system"] == "arq"
        children = [s for s in spans if s["parent"] == a["span_id"]]
        assert sorted(s["name"] for s in children) == [
            "chat claude-sonnet-4-5",
            "route",
            "wait",
        ]
        assert all(s["trace_id"] == a["trace_id"] for s in children)
    assert {s["service"] for s in spans} == {"routeq-test"}


def test_one_job_producer_span(traced: OtlpReceiver) -> None:
    with telemetry.job_span("j7", "b1", tenant="acme", task="qa") as carrier:
        pass
    run_attempt(make_job(7, carrier))
    flush()
    spans = traced.wait_for(lambda s: len(s) >= 5)
    (create,) = by_name(spans, f"create {QUEUE}")
    (attempt,) = by_name(spans, tracing.attempt_span_name(QUEUE))
    assert create["kind"] == "PRODUCER" and create["attributes"]["routeq.job_id"] == "j7"
    assert attempt["parent"] == create["span_id"]
    assert attempt["trace_id"] == create["trace_id"]


def test_job_without_context_has_no_link(traced: OtlpReceiver) -> None:
    run_attempt(make_job())
    flush()
    spans = traced.wait_for(lambda s: len(s) >= 4)
    (attempt,) = by_name(spans, tracing.attempt_span_name(QUEUE))
    assert attempt["parent"] is None and attempt["links"] == []


def test_sampler_from_env_drops_whole_jobs(
    clean_env: pytest.MonkeyPatch, otlp_receiver: OtlpReceiver
) -> None:
    for k, v in otlp_receiver.env().items():
        clean_env.setenv(k, v)
    clean_env.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    clean_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    assert telemetry.setup_tracing("routeq-test")
    with telemetry.enqueue_span("b1", 1):
        carrier = telemetry.inject_context()
    assert int(carrier["traceparent"].rsplit("-", 1)[1], 16) & 1 == 0  # propagated, not sampled
    run_attempt(make_job(0, carrier))
    flush()
    telemetry.shutdown_tracing()
    assert otlp_receiver.spans() == []


# --- attributes ---------------------------------------------------------------------------------


def _one(spans: Spans, name: str) -> dict[str, Any]:
    (span,) = by_name(spans, name)
    return span


def test_genai_and_route_attributes(traced: OtlpReceiver) -> None:
    with telemetry.enqueue_span("b1", 1):
        run_attempt(make_job(0, telemetry.inject_context()))
    flush()
    spans = traced.wait_for(lambda s: len(s) >= 5)
    chat = _one(spans, "chat claude-sonnet-4-5")
    assert chat["kind"] == "CLIENT"
    assert chat["attributes"] == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.request.max_tokens": 512,
        "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.response.id": "msg_01",
        "gen_ai.usage.input_tokens": 100 + 1000 + 2000,  # uncached + cache write + cache read
        "gen_ai.usage.output_tokens": 40,
        "gen_ai.usage.cache_read.input_tokens": 2000,
        "gen_ai.usage.cache_write.input_tokens": 1000,
        "gen_ai.response.finish_reasons": ["end_turn"],
        "routeq.cost_usd": 0.001234,
        "routeq.baseline_cost_usd": 0.005,
        "routeq.tier": "sonnet",
    }
    route = _one(spans, "route")["attributes"]
    assert route["routeq.route.tier"] == "sonnet"
    assert route["routeq.route.score"] == pytest.approx(0.61)
    assert route["routeq.route.learned_score"] == pytest.approx(0.7)
    assert route["routeq.route.reason"] == "rule+ml"
    wait = _one(spans, "wait")["attributes"]
    assert wait["routeq.wait.reason"] == "slot" and wait["routeq.tier"] == "sonnet"
    assert isinstance(wait["routeq.wait_ms"], int)


def test_content_is_off_by_default_and_on_when_asked(traced: OtlpReceiver) -> None:
    run_attempt(make_job(0))
    flush()
    spans = traced.wait_for(lambda s: len(s) >= 4)
    assert _one(spans, "chat claude-sonnet-4-5")["events"] == []
    assert not any(b"Summarise document" in body or b"ANSWER-TEXT" in body for body in traced.raw)

    traced.clear()
    run_attempt(make_job(0), trace_content=True)
    flush()
    spans = traced.wait_for(lambda s: len(s) >= 4)
    events = {e["name"]: e["attributes"] for e in _one(spans, "chat claude-sonnet-4-5")["events"]}
    assert "Summarise document 0" in events["gen_ai.input"]["gen_ai.input.messages"]
    assert "Be brief." in events["gen_ai.input"]["gen_ai.system_instructions"]
    assert "ANSWER-TEXT" in events["gen_ai.output"]["gen_ai.output.messages"]


def test_error_sets_error_type(traced: OtlpReceiver) -> None:
    class OverloadedError(Exception):
        pass

    with pytest.raises(OverloadedError), tracing.genai_span("claude-opus-4-5", 10):
        raise OverloadedError("529 body that must not be recorded")
    with tracing.genai_span("claude-haiku-4-5", 10) as span:
        tracing.record_genai_error(span, "rate_limit_error")
    flush()
    spans = traced.wait_for(lambda s: len(s) == 2)
    opus = _one(spans, "chat claude-opus-4-5")
    assert opus["status"] == "ERROR" and opus["attributes"]["error.type"] == "OverloadedError"
    assert opus["events"] == []  # no exception event with the message
    haiku = _one(spans, "chat claude-haiku-4-5")
    assert haiku["status"] == "ERROR" and haiku["attributes"]["error.type"] == "rate_limit_error"


# --- the SDK's own spans ------------------------------------------------------------------------


MESSAGE = {
    "id": "msg_stand_in",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 5,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    },
}


@pytest.fixture
async def stand_in() -> Any:
    async def messages(request: web.Request) -> web.Response:
        return web.json_response(MESSAGE, headers={"request-id": "req_1"})

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def _call(base_url: str, open_telemetry: Any) -> None:
    client = AsyncAnthropic(
        api_key=SECRET_KEY, base_url=base_url, max_retries=0, open_telemetry=open_telemetry
    )
    try:
        with tracing.genai_span(
            "claude-haiku-4-5", 16, trace_content=True, messages=[{"role": "user", "content": "x"}]
        ):
            await client.messages.create(
                model="claude-haiku-4-5", max_tokens=16, messages=[{"role": "user", "content": "x"}]
            )
    finally:
        await client.close()


async def test_sdk_spans_off_with_open_telemetry_false_and_key_never_exported(
    traced: OtlpReceiver, stand_in: str
) -> None:
    provider = telemetry.tracer_provider()
    # Control: an SDK client left to emit spans does duplicate our GenAI span...
    await _call(stand_in, {"tracer_provider": provider})
    flush()
    spans = traced.wait_for(lambda s: len(s) == 2)
    assert sorted(s["name"] for s in spans) == ["anthropic.messages.create", "chat claude-haiku-4-5"]
    traced.clear()
    # ...and `open_telemetry=False` leaves only ours.
    await _call(stand_in, False)
    flush()
    spans = traced.wait_for(lambda s: len(s) == 1)
    assert [s["name"] for s in spans] == ["chat claude-haiku-4-5"]
    assert traced.raw and not any(SECRET_KEY.encode() in body for body in traced.raw)


def test_api_batch_span_links_the_attempts_that_gathered_its_requests(traced: OtlpReceiver) -> None:
    carriers = []
    for i in range(2):
        with tracing.attempt_span(make_job(i), job_try=1, queue=QUEUE):
            carriers.append(telemetry.inject_context())
    with tracing.api_batch_span("claude-haiku-4-5", 3, [*carriers, {}]) as span:
        span.set_attribute("anthropic.message.batch.id", "msgbatch_x")
    flush()
    spans = traced.wait_for(lambda s: len(by_name(s, "batch claude-haiku-4-5")) == 1)
    (batch,) = by_name(spans, "batch claude-haiku-4-5")
    assert batch["kind"] == "CLIENT" and batch["attributes"]["anthropic.message.batch.id"] == "msgbatch_x"
    attempts = by_name(spans, tracing.attempt_span_name(QUEUE))
    assert {(ln["trace_id"], ln["span_id"]) for ln in batch["links"]} == {
        (a["trace_id"], a["span_id"]) for a in attempts
    }
