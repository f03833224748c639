"""The model call: the official SDK, one request, no SDK retries (routeq owns retries in one place)."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from anthropic import AsyncAnthropic, DefaultAioHttpClient

from jobs.results import Cost, Usage
from jobs.settings import Settings
from jobs.tiers import TOP_TIER, Tier
from worker.observe import tracing
from worker.policy import faults, pricing
from worker.policy.cache_layout import RequestPlan, Ttl

if TYPE_CHECKING:  # the runtime holds the client this module makes
    from worker.runtime import Runtime


@dataclass(frozen=True, slots=True)
class CallResult:
    text: str
    stop_reason: str | None
    usage: Usage
    model: str
    message_id: str
    request_id: str | None
    latency_ms: int
    service_tier: str = "standard"  # as the API reports it: what the call is billed at


def make_client(settings: Settings) -> AsyncAnthropic:
    # A stand-in (ANTHROPIC_BASE_URL) may take any key; the SDK refuses to send a request with none.
    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else "none"
    # Both transports get the SDK's own defaults (connection limits, redirects); the timeout and
    # retries-off below are per request, so they hold on either.
    http_client = (
        DefaultAioHttpClient(timeout=settings.call_timeout_s)
        if settings.http_transport == "aiohttp"
        else None
    )
    return AsyncAnthropic(
        api_key=key,
        base_url=settings.anthropic_base_url,
        max_retries=0,
        timeout=settings.call_timeout_s,
        http_client=http_client,
        # routeq makes its own GenAI CLIENT span (worker/observe/tracing.py); the SDK's would duplicate it.
        open_telemetry=False,
    )


def usage_from(u: dict[str, Any], requested_ttl: str | None) -> Usage:
    """Map the API's usage; when the 5m/1h split is absent, writes are attributed to the TTL we asked for."""
    written = u.get("cache_creation_input_tokens") or 0
    split = u.get("cache_creation") or {}
    w5, w1 = split.get("ephemeral_5m_input_tokens"), split.get("ephemeral_1h_input_tokens")
    if w5 is None and w1 is None:
        w5, w1 = (0, written) if requested_ttl == "1h" else (written, 0)
    return Usage(
        input_tokens=u.get("input_tokens") or 0,
        output_tokens=u.get("output_tokens") or 0,
        cache_write_5m_tokens=w5 or 0,
        cache_write_1h_tokens=w1 or 0,
        cache_read_tokens=u.get("cache_read_input_tokens") or 0,
    )


async def call(
    client: AsyncAnthropic, params: dict[str, Any], *, job_id: str, requested_ttl: str | None = None
) -> CallResult:
    t0 = time.perf_counter()
    raw = await client.messages.with_raw_response.create(**params, extra_headers={"x-routeq-job-id": job_id})
    # The body as JSON rather than raw.parse(): building the SDK's Message model was ~5% of a worker's CPU,
    # and routeq reads five fields of it. The SDK still sends the request and maps errors to exceptions.
    msg = orjson.loads(await raw.read())
    latency_ms = int((time.perf_counter() - t0) * 1000)
    text = "".join(b.get("text", "") for b in msg.get("content") or () if b.get("type") == "text")
    return CallResult(
        text=text,
        stop_reason=msg.get("stop_reason"),
        usage=usage_from(msg.get("usage") or {}, requested_ttl),
        model=msg.get("model") or str(params.get("model", "")),
        message_id=msg.get("id") or "",
        request_id=raw.headers.get("request-id"),
        latency_ms=latency_ms,
        service_tier=(msg.get("usage") or {}).get("service_tier") or "standard",
    )


async def priced_call(
    rt: Runtime,
    tier: Tier,
    plan: RequestPlan,
    ttl: Ttl | None,
    *,
    job_id: str,
    max_output_tokens: int,
    today: dt.date,
) -> tuple[CallResult, Cost]:
    """The model call in its GenAI span; returns the answer and its itemised cost (priced once, at the
    rates of the service tier that answered)."""
    s = rt.settings
    model, spec = s.model_for(tier), s.spec_for(tier)
    with tracing.genai_span(
        model,
        max_output_tokens,
        tier=tier,
        messages=plan.params["messages"],
        system=plan.params.get("system"),
        trace_content=s.trace_content,
    ) as span:
        try:
            with rt.metrics.track_inflight(tier):
                res = await call(rt.client, plan.params, job_id=job_id, requested_ttl=ttl)
        except Exception as e:
            tracing.record_genai_error(span, faults.classify(e).kind)
            raise
        cost = pricing.price_response(spec, res.usage, today, res.service_tier)
        tracing.record_genai_result(
            span,
            response_model=res.model,
            response_id=res.message_id,
            usage=res.usage,
            finish_reason=res.stop_reason,
            cost_pusd=cost.total_pusd,
            baseline_cost_pusd=pricing.baseline_cost(s.spec_for(TOP_TIER), res.usage, today),
            tier=tier,
            output_text=res.text,
            trace_content=s.trace_content,
        )
    return res, cost
