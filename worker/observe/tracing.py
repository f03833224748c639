"""The worker's spans: one CONSUMER span per attempt, with route, wait, cache-warm and GenAI children.

All helpers are context managers around ``jobs.telemetry.tracer()``, so with tracing off they cost a
no-op span each. The GenAI span follows the OpenTelemetry GenAI semantic conventions; the SDK's own
``anthropic.messages.create`` span would duplicate it, so the client must be built with
``AsyncAnthropic(..., open_telemetry=False)``.

Prompt and answer text are recorded only when asked (``Settings.trace_content``), as span events; the
API key is never passed to any helper here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Status, StatusCode, get_current_span

from jobs.contract import Job
from jobs.results import RouteRecord, Usage, usd_float
from jobs.telemetry import MESSAGING_SYSTEM, tracer, tracing_enabled
from jobs.tiers import Tier

# Span names, for the pipeline and for tests that look spans up.
SPAN_ROUTE = "route"
SPAN_WAIT = "wait"
GENAI_OPERATION = "chat"
PROVIDER = "anthropic"
EVENT_INPUT = "gen_ai.input"
EVENT_OUTPUT = "gen_ai.output"


def attempt_span_name(queue: str) -> str:
    return f"process {queue}"


def genai_span_name(model: str) -> str:
    return f"{GENAI_OPERATION} {model}"


def extract_context(carrier: Mapping[str, str] | None) -> Context:
    """The producer's context from ``Job.trace_context`` (an empty context if there is none)."""
    if not carrier:
        return Context()
    return propagate.extract(dict(carrier), context=Context())


def producer_link(carrier: Mapping[str, str] | None) -> Link | None:
    """A link to the producer's span, or ``None`` when the job carries no valid trace context."""
    ctx = get_current_span(extract_context(carrier)).get_span_context()
    return Link(ctx) if ctx.is_valid else None


def _mark_error(span: Span, exc: BaseException) -> None:
    span.set_attribute("error.type", type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


@contextmanager
def _span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, **kw: Any) -> Iterator[Span]:
    if not tracing_enabled():
        # Tracing off: the API's no-op tracer would still attach and detach a context per span (~3% of
        # a worker's CPU for six spans a job); a non-recording span does nothing at all.
        yield INVALID_SPAN
        return
    # record_exception would store str(exc), which for API errors can include response bodies; we keep
    # only the exception type (error.type), which is what dashboards group by.
    with tracer().start_as_current_span(
        name, kind=kind, record_exception=False, set_status_on_exception=False, **kw
    ) as span:
        try:
            yield span
        except BaseException as exc:
            _mark_error(span, exc)
            raise


@contextmanager
def attempt_span(job: Job, job_try: int, queue: str = "routeq:queue") -> Iterator[Span]:
    """CONSUMER span for one arq try of ``process_job``: a child of the producer's chunk span, so one
    trace runs from enqueue to the model call (see jobs/telemetry.py). A job without a trace context
    starts a trace of its own.
    """
    if not tracing_enabled():
        yield INVALID_SPAN
        return
    attrs: dict[str, str | int] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process_job",
        "messaging.destination.name": queue,
        "messaging.message.id": job.job_id,
        "routeq.job_id": job.job_id,
        "routeq.try": job_try,
        "routeq.tenant": job.tags.tenant,
        "routeq.task": job.task.value,
    }
    if job.tags.batch is not None:
        attrs["routeq.batch"] = job.tags.batch
    with _span(
        attempt_span_name(queue),
        kind=SpanKind.CONSUMER,
        context=extract_context(job.trace_context),
        attributes=attrs,
    ) as span:
        yield span


def set_route(span: Span, record: RouteRecord) -> None:
    span.set_attribute("routeq.route.tier", record.tier.value)
    span.set_attribute("routeq.route.base_tier", record.base_tier.value)
    span.set_attribute("routeq.route.score", record.score)
    if record.learned_score is not None:
        span.set_attribute("routeq.route.learned_score", record.learned_score)
    span.set_attribute("routeq.route.reason", record.reason)
    span.set_attribute("routeq.route.strategy", record.strategy)


def record_check(score: float, signal: str | None, action: str, tier: str) -> None:
    """The answer check on the job's attempt span: its score, strongest signal and what it decided.

    Reasons stay out of traces: they quote numbers of the prompt and the answer.
    """
    span = get_current_span()
    attrs: dict[str, str | float] = {
        "routeq.check.score": round(score, 4),
        "routeq.check.signal": signal or "none",
        "routeq.check.action": action,
    }
    span.add_event("routeq.check", {**attrs, "routeq.tier": tier})  # one per paid answer
    span.set_attributes(attrs)  # the last answer's check, for filtering spans


@contextmanager
def route_span(record: RouteRecord | None = None) -> Iterator[Span]:
    """The routing decision; pass ``record`` now or call ``set_route(span, record)`` once it is known."""
    with _span(SPAN_ROUTE) as span:
        if record is not None:
            set_route(span, record)
        yield span


@contextmanager
def wait_span(reason: str, tier: Tier | str | None = None) -> Iterator[Span]:
    """Time waiting for admission; ``reason``: ``slot``, ``rate_limit``, ``cooldown``, ``cache_warm``...

    ``routeq.wait_ms`` is set on exit from the block's duration.
    """
    attrs: dict[str, str] = {"routeq.wait.reason": reason}
    if tier is not None:
        attrs["routeq.tier"] = str(tier)
    start = time.monotonic()
    with _span(SPAN_WAIT, attributes=attrs) as span:
        try:
            yield span
        finally:
            span.set_attribute("routeq.wait_ms", int((time.monotonic() - start) * 1000))


# --- GenAI ------------------------------------------------------------------------------------------


def _text_parts(content: Any) -> list[dict[str, str]]:
    """Anthropic message content (a string or a list of blocks) as semconv ``parts``; text blocks only."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, str]] = []
    for block in content or ():
        if isinstance(block, Mapping) and block.get("type") == "text":
            parts.append({"type": "text", "content": str(block.get("text", ""))})
    return parts


def input_messages_json(messages: Sequence[Mapping[str, Any]]) -> str:
    out = [{"role": str(m.get("role", "user")), "parts": _text_parts(m.get("content"))} for m in messages]
    return orjson.dumps(out).decode()


def system_json(system: Any) -> str:
    return orjson.dumps(_text_parts(system)).decode()


@contextmanager
def genai_span(
    model: str,
    max_tokens: int,
    *,
    tier: Tier | str | None = None,
    messages: Sequence[Mapping[str, Any]] | None = None,
    system: Any = None,
    trace_content: bool = False,
) -> Iterator[Span]:
    """CLIENT span of one model call, ``chat {model}``. Failures set ``error.type``.

    ``messages``/``system`` are the request's, recorded as a ``gen_ai.input`` event only when
    ``trace_content`` is on.
    """
    attrs: dict[str, str | int] = {
        "gen_ai.operation.name": GENAI_OPERATION,
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": model,
        "gen_ai.request.max_tokens": max_tokens,
    }
    if tier is not None:
        attrs["routeq.tier"] = str(tier)
    with _span(genai_span_name(model), kind=SpanKind.CLIENT, attributes=attrs) as span:
        if trace_content and messages is not None:
            event: dict[str, str] = {"gen_ai.input.messages": input_messages_json(messages)}
            if system is not None:
                event["gen_ai.system_instructions"] = system_json(system)
            span.add_event(EVENT_INPUT, event)
        yield span


def record_genai_result(
    span: Span,
    *,
    response_model: str | None,
    response_id: str | None,
    usage: Usage,
    finish_reason: str | None,
    cost_pusd: int | None = None,
    baseline_cost_pusd: int | None = None,
    tier: Tier | str | None = None,
    output_text: str | None = None,
    trace_content: bool = False,
) -> None:
    """Response attributes of a finished call. ``gen_ai.usage.input_tokens`` counts cached input too."""
    if response_model:
        span.set_attribute("gen_ai.response.model", response_model)
    if response_id:
        span.set_attribute("gen_ai.response.id", response_id)
    span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
    span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cache_read_tokens)
    span.set_attribute("gen_ai.usage.cache_write.input_tokens", usage.cache_write_tokens)
    if finish_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
    if cost_pusd is not None:
        span.set_attribute("routeq.cost_usd", usd_float(cost_pusd))
    if baseline_cost_pusd is not None:
        span.set_attribute("routeq.baseline_cost_usd", usd_float(baseline_cost_pusd))
    if tier is not None:
        span.set_attribute("routeq.tier", str(tier))
    if trace_content and output_text is not None:
        out = [{"role": "assistant", "parts": _text_parts(output_text), "finish_reason": finish_reason or ""}]
        span.add_event(EVENT_OUTPUT, {"gen_ai.output.messages": orjson.dumps(out).decode()})


def record_genai_error(span: Span, error_type: str) -> None:
    """A failed call that the pipeline handles without raising (e.g. a 529 it will retry)."""
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))


# Links per API batch span: the SDK keeps 128 by default; more would be dropped silently anyway.
MAX_BATCH_LINKS = 128


@contextmanager
def api_batch_span(model: str, requests: int, carriers: Sequence[Mapping[str, str]]) -> Iterator[Span]:
    """A CLIENT span per Message Batch create, linked to the attempt spans of (up to 128 of) its jobs."""
    links = [ln for c in carriers[:MAX_BATCH_LINKS] if (ln := producer_link(c)) is not None]
    attrs = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": model,
        "routeq.batch.requests": requests,
    }
    with _span(f"batch {model}", kind=SpanKind.CLIENT, links=links, attributes=attrs) as span:
        yield span


def batch_result_span_name(model: str) -> str:
    return f"batch result {model}"


@contextmanager
def batch_result_span(
    job: Job,
    model: str,
    result_type: str,
    batch_id: str,
    gathered_by: Mapping[str, str] | None,
    api_batch: Mapping[str, str] | None,
) -> Iterator[Span]:
    """CONSUMER span for one job's Message Batch result: in the job's trace (a child of the attempt
    span that gathered the request, ``gathered_by``) and linked to its API batch's span (``api_batch``),
    so a job's trace leads to the batch that answered it as the batch span leads to its jobs."""
    if not tracing_enabled():
        yield INVALID_SPAN
        return
    link = producer_link(api_batch)
    attrs: dict[str, str] = {
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": model,
        "routeq.job_id": job.job_id,
        "routeq.tenant": job.tags.tenant,
        "routeq.batch.result": result_type,
    }
    if batch_id:
        attrs["anthropic.message.batch.id"] = batch_id
    if job.tags.batch is not None:
        attrs["routeq.batch"] = job.tags.batch
    with _span(
        batch_result_span_name(model),
        kind=SpanKind.CONSUMER,
        context=extract_context(gathered_by),
        links=[link] if link is not None else [],
        attributes=attrs,
    ) as span:
        yield span
