"""OpenTelemetry setup and the producer's spans.

Configuration is the standard ``OTEL_*`` environment: the exporter classes read their endpoint, headers,
compression and timeout; ``TracerProvider`` reads ``OTEL_TRACES_SAMPLER``/``_ARG``; ``Resource.create``
reads ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``; ``BatchSpanProcessor`` reads ``OTEL_BSP_*``.
Here we only decide *whether* to trace and *which* exporter entry point to load.

Tracing is off unless an exporter or an OTLP endpoint is configured; then nothing is installed and every
helper runs against a no-op tracer.

Propagation design: one PRODUCER span per enqueue call (``send {queue}``) and, linked to it, one
PRODUCER span per chunk of up to 500 jobs (``create {queue}``), the root of a new trace. Every job of a
chunk carries that span's context in ``Job.trace_context`` (one ``inject_context()`` per chunk, nothing
per job), and the worker's CONSUMER attempt spans are its children: one trace id runs from enqueue through
each attempt to the model call. Why not a PRODUCER span per job: each exported span costs the producer
~0.5 ms of CPU here (span + protobuf encoding in the export thread, same GIL), i.e. ~50 s for a 100k-job
enqueue instead of ~0 (measured; README, "Tracing"). Why not one trace per batch: a 100k-job batch would be
one trace of ~500k spans and head sampling all-or-nothing; a chunk keeps traces at a few thousand spans
and ``OTEL_TRACES_SAMPLER=traceidratio`` samples chunks. ``job_span`` gives a per-job PRODUCER span for
producers that enqueue one job at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.environment_variables import OTEL_TRACES_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_SDK_DISABLED,
    OTEL_SERVICE_NAME,
)
from opentelemetry.trace import Link, Span, SpanKind, Tracer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

SCOPE = "routeq"
MESSAGING_SYSTEM = "arq"  # the queue protocol; Redis is its broker
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
# The Python SDK's own default when no protocol is set (opentelemetry-instrument does the same).
_DEFAULT_OTLP = "otlp_proto_grpc"


@dataclass
class _State:
    provider: TracerProvider | None = None
    # get_tracer is not cheap (it compares scopes and resets warning filters): fetch once per provider.
    tracer: Tracer | None = None


_state = _State()
_NOOP_TRACER: Tracer = trace.NoOpTracer()


# --- configuration ---------------------------------------------------------------------------------


def exporter_names(env: dict[str, str] | os._Environ[str] | None = None) -> list[str]:
    """Entry-point names of the span exporters the environment asks for; ``[]`` means tracing off.

    ``OTEL_TRACES_EXPORTER`` wins (``none`` turns tracing off); otherwise an OTLP endpoint alone enables
    the ``otlp`` exporter, with ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` choosing gRPC or HTTP.
    """
    env = os.environ if env is None else env
    if env.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return []
    raw = env.get(OTEL_TRACES_EXPORTER)
    if raw is None:
        has_endpoint = bool(
            env.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or env.get(OTEL_EXPORTER_OTLP_ENDPOINT)
        )
        raw = "otlp" if has_endpoint else "none"
    names = [n.strip() for n in raw.split(",") if n.strip() and n.strip().lower() != "none"]
    protocol = (
        env.get(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) or env.get(OTEL_EXPORTER_OTLP_PROTOCOL) or ""
    ).strip()
    if "otlp" in names and protocol and protocol not in _OTLP_BY_PROTOCOL:
        raise ValueError(f"unsupported OTLP protocol {protocol!r} (use grpc or http/protobuf)")
    otlp = _OTLP_BY_PROTOCOL.get(protocol, _DEFAULT_OTLP)
    return [otlp if n == "otlp" else n for n in names]


def _load_exporter(name: str) -> SpanExporter:
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise ValueError(f"no span exporter named {name!r} is installed")
    cls = next(iter(found)).load()
    exporter: SpanExporter = cls()  # reads its OTEL_EXPORTER_OTLP_* settings itself
    return exporter


def setup_tracing(service_name: str) -> bool:
    """Install a TracerProvider, a BatchSpanProcessor per configured exporter; ``False`` if tracing is off.

    ``service_name`` is the default; ``OTEL_SERVICE_NAME`` overrides it. Calling again after
    ``shutdown_tracing`` installs a fresh provider (tests do); a second call without shutdown is a no-op.
    """
    if _state.provider is not None:
        return True
    names = exporter_names()
    if not names:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attrs = {} if os.environ.get(OTEL_SERVICE_NAME) else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attrs))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_load_exporter(name)))
    _state.provider = provider
    _state.tracer = provider.get_tracer(SCOPE)
    # Also the global provider, so third-party instrumentation joins the same traces. The API allows
    # setting it once per process; our own spans always use _state.provider (see tracer()).
    if not isinstance(trace.get_tracer_provider(), type(provider)):
        trace.set_tracer_provider(provider)
    log.info("tracing on: exporters %s", ",".join(names))
    return True


def shutdown_tracing() -> None:
    """Flush queued spans and stop the exporters (call once at process exit)."""
    provider, _state.provider, _state.tracer = _state.provider, None, None
    if provider is not None:
        provider.force_flush()
        provider.shutdown()


def tracing_enabled() -> bool:
    return _state.provider is not None


def tracer_provider() -> TracerProvider | None:
    """The provider ``setup_tracing`` installed (``None`` while tracing is off)."""
    return _state.provider


def tracer() -> Tracer:
    """routeq's tracer: the installed provider's, else the API's no-op one."""
    return _state.tracer or _NOOP_TRACER


# --- propagation -----------------------------------------------------------------------------------


def inject_context(context: Context | None = None) -> dict[str, str]:
    """W3C ``traceparent``/``tracestate`` of ``context`` (default: the current one) as a carrier dict."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier


# --- producer spans --------------------------------------------------------------------------------


@contextmanager
def enqueue_span(
    batch: str, count: int, queue: str = "routeq:queue", tenant: str | None = None
) -> Iterator[Span]:
    """PRODUCER span around one enqueue call (``send {queue}``).

    Inside it, ``inject_context()`` gives the carrier to put in every job's ``trace_context``.
    """
    attrs: dict[str, str | int] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": queue,
        "messaging.batch.message_count": count,
        "routeq.batch": batch,
    }
    if tenant is not None:
        attrs["routeq.tenant"] = tenant
    with tracer().start_as_current_span(f"send {queue}", kind=SpanKind.PRODUCER, attributes=attrs) as span:
        yield span


@contextmanager
def chunk_span(batch: str, count: int, queue: str = "routeq:queue") -> Iterator[dict[str, str]]:
    """PRODUCER ``create {queue}`` span for one chunk of jobs; yields the carrier every job of it gets.

    A new trace linked to the enqueue call's span; ``{}`` when tracing is off.
    """
    if _state.provider is None:
        yield {}
        return
    current = trace.get_current_span().get_span_context()
    attrs: dict[str, str | int] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "create",
        "messaging.operation.name": "create",
        "messaging.destination.name": queue,
        "messaging.batch.message_count": count,
        "routeq.batch": batch,
    }
    span = tracer().start_span(
        f"create {queue}",
        context=Context(),
        kind=SpanKind.PRODUCER,
        attributes=attrs,
        links=[Link(current)] if current.is_valid else None,
    )
    with trace.use_span(span, end_on_exit=True):
        yield inject_context(trace.set_span_in_context(span))


@contextmanager
def job_span(
    job_id: str, batch: str, queue: str = "routeq:queue", tenant: str | None = None, task: str | None = None
) -> Iterator[dict[str, str]]:
    """PRODUCER ``create {queue}`` span around enqueueing one job; yields the carrier for ``trace_context``.

    For producers that enqueue jobs one at a time; bulk enqueues use ``enqueue_span`` + ``inject_context``.
    """
    attrs: dict[str, str] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "create",
        "messaging.destination.name": queue,
        "messaging.message.id": job_id,
        "routeq.job_id": job_id,
        "routeq.batch": batch,
    }
    if tenant is not None:
        attrs["routeq.tenant"] = tenant
    if task is not None:
        attrs["routeq.task"] = task
    with tracer().start_as_current_span(f"create {queue}", kind=SpanKind.PRODUCER, attributes=attrs):
        yield inject_context()
