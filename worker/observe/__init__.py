"""Observability of a worker process: OpenTelemetry spans and Prometheus metrics.
May import jobs; nothing else of worker."""
