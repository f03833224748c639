"""Observability of a worker process: OpenTelemetry spans, Prometheus metrics, and log lines
that never carry job text.
May import jobs; nothing else of worker."""
