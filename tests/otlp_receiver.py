"""A real OTLP/HTTP trace receiver for tests: POST /v1/traces, protobuf (optionally gzip), on 127.0.0.1.

Usage::

    with OtlpReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
        ...  # run code (in-process or child processes) that exports spans
        spans = rx.wait_for(lambda s: len(s) >= 3)

Each span is a plain dict: name, kind ("CLIENT", "CONSUMER", ...), trace_id, span_id, parent (hex or
None), attributes, events [{name, attributes}], links [{trace_id, span_id, attributes}], status
("UNSET"/"OK"/"ERROR"), service (resource service.name), scope, start_ns, end_ns.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

Spans = list[dict[str, Any]]


def any_value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, which)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


def decode(request: ExportTraceServiceRequest) -> Spans:
    out: Spans = []
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                out.append(
                    {
                        "name": sp.name,
                        "kind": Span.SpanKind.Name(sp.kind).removeprefix("SPAN_KIND_"),
                        "trace_id": sp.trace_id.hex(),
                        "span_id": sp.span_id.hex(),
                        "parent": sp.parent_span_id.hex() or None,
                        "attributes": attributes(sp.attributes),
                        "events": [
                            {"name": e.name, "attributes": attributes(e.attributes)} for e in sp.events
                        ],
                        "links": [
                            {
                                "trace_id": ln.trace_id.hex(),
                                "span_id": ln.span_id.hex(),
                                "attributes": attributes(ln.attributes),
                            }
                            for ln in sp.links
                        ],
                        "status": Status.StatusCode.Name(sp.status.code).removeprefix("STATUS_CODE_"),
                        "service": resource.get("service.name"),
                        "resource": resource,
                        "scope": ss.scope.name,
                        "start_ns": sp.start_time_unix_nano,
                        "end_ns": sp.end_time_unix_nano,
                    }
                )
    return out


class OtlpReceiver:
    """Collects every exported span; ``raw`` keeps the decompressed request bodies (for secret scans)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._spans: Spans = []
        self.raw: list[bytes] = []
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/traces":
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                req = ExportTraceServiceRequest()
                try:
                    req.ParseFromString(body)
                except Exception:
                    self.send_error(400, "not an ExportTraceServiceRequest")
                    return
                receiver._add(body, decode(req))
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._serve, name="otlp-receiver", daemon=True)

    def _serve(self) -> None:
        self._server.serve_forever(poll_interval=0.05)

    def _add(self, body: bytes, spans: Spans) -> None:
        with self._lock:
            self.raw.append(body)
            self._spans.extend(spans)
            self.requests += 1

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """Base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter appends /v1/traces)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        return f"{self.endpoint}/v1/traces"

    def env(self) -> dict[str, str]:
        """The environment that points an OTLP/HTTP exporter (in this or a child process) here."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }

    def spans(self) -> Spans:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self.raw.clear()

    def wait_for(self, predicate: Callable[[Spans], bool], timeout: float = 10.0) -> Spans:
        """Poll until ``predicate(spans)`` holds; raise ``TimeoutError`` with what arrived otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted(s["name"] for s in spans)
                raise TimeoutError(f"OTLP receiver: condition not met in {timeout}s; got {names}")
            time.sleep(0.02)

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def by_name(spans: Spans, name: str) -> Spans:
    return [s for s in spans if s["name"] == name]


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """Import into a test module (``from tests.otlp_receiver import otlp_receiver``) to use it."""
    with OtlpReceiver() as rx:
        yield rx
