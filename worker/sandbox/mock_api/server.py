"""The aiohttp application: Messages endpoints, control endpoints, and start/stop for tests and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from worker.sandbox.mock_api.answers import active_markers, make_answer, message_body
from worker.sandbox.mock_api.batches import BatchStore, add_batch_routes
from worker.sandbox.mock_api.caching import PromptCache
from worker.sandbox.mock_api.config import MockConfig, ModelSpec
from worker.sandbox.mock_api.errors import ApiError, invalid
from worker.sandbox.mock_api.faults import FAULT_KINDS, FaultInjector, FaultPlan
from worker.sandbox.mock_api.limits import ModelLimiter
from worker.sandbox.mock_api.request import decode_body, parse_messages_request
from worker.sandbox.mock_api.stats import ModelStats, Stats

JOB_HEADER = "x-routeq-job-id"
_JSON = "application/json"
_FAULT_MARKERS = {f"fault-{k}": k for k in FAULT_KINDS}
_FAULT_ERRORS: dict[str, tuple[int, str]] = {
    "529": (529, "Overloaded"),
    "500": (500, "Internal server error"),
    "503": (503, "Service unavailable"),
    "504": (504, "Request timed out"),
    "400": (400, "messages: injected invalid request"),
    "401": (401, "invalid x-api-key"),
    "403": (403, "Your API key does not have permission to use the specified resource."),
}
_SPEND_MESSAGE = (
    "You have reached your specified workspace API usage limits. "
    "You will regain access on the first day of next month."
)


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def _json(status: int, payload: Any, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), headers=headers, content_type=_JSON)


def _error(err: ApiError, rid: str) -> web.Response:
    headers = {"request-id": rid, **err.headers}
    return web.Response(status=err.status, body=err.body(rid), headers=headers, content_type=_JSON)


def _abort_with_reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST and no response (SO_LINGER 0 turns close into a reset)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class MockState:
    """Everything the handlers share; replaced piecewise by POST /_reset."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.cache = PromptCache(config.clock)
        self.faults = FaultInjector(config.faults, config.seed)
        self.stats = Stats()
        self._specs: dict[str, ModelSpec | None] = {}
        self._limiters: dict[str, ModelLimiter] = {}
        self.batches: BatchStore | None = None  # set by add_batch_routes

    def spec(self, model: str) -> ModelSpec:
        if model not in self._specs:
            self._specs[model] = self.config.resolve(model)
        spec = self._specs[model]
        if spec is None:
            raise invalid(f"model: {model} is not a known model")
        return spec

    def limiter(self, spec: ModelSpec) -> ModelLimiter:
        got = self._limiters.get(spec.model)
        if got is None:
            got = ModelLimiter(spec.max_concurrency, spec.rpm, self.config.clock)
            self._limiters[spec.model] = got
        return got

    def reset(self) -> None:
        self.cache.clear()
        self.stats = Stats()
        self.faults.set_plan(FaultPlan(), self.config.seed)
        # Limiters keep their `active` counts: requests admitted before the reset still release.

    def check_auth(self, request: web.Request) -> None:
        key = request.headers.get("x-api-key")
        if not key:
            auth = request.headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                key = auth[7:].strip()
        if not key:
            raise ApiError(401, "x-api-key header is required")
        if self.config.api_key is not None and key != self.config.api_key:
            raise ApiError(401, "invalid x-api-key")


class Handlers:
    def __init__(self, state: MockState) -> None:
        self.s = state

    async def messages(self, request: web.Request) -> web.StreamResponse:
        rid = _new_id("req_")
        raw = await request.read()
        try:
            body = decode_body(raw)
        except ApiError as e:
            self.s.stats.model("_invalid").errors["400"] += 1
            return _error(e, rid)
        name = body.get("model")
        ms = self.s.stats.model(name if isinstance(name, str) and name else "_invalid")
        ms.enter()
        try:
            return await self._messages(request, body, ms, rid)
        except ApiError as e:
            ms.errors[str(e.status)] += 1
            return _error(e, rid)
        finally:
            ms.leave()

    async def _messages(
        self, request: web.Request, body: dict[str, Any], ms: ModelStats, rid: str
    ) -> web.StreamResponse:
        s = self.s
        s.check_auth(request)
        req = parse_messages_request(body)
        spec = s.spec(req.model)
        if req.input_tokens > spec.context_window:
            raise invalid(f"prompt is too long: {req.input_tokens} tokens > {spec.context_window} maximum")
        if req.max_tokens > spec.max_output_tokens:
            raise invalid(
                f"max_tokens: {req.max_tokens} > {spec.max_output_tokens}, which is the maximum allowed "
                f"number of output tokens for {req.model}"
            )
        limiter = s.limiter(spec)
        rejection = limiter.try_acquire()
        if rejection is not None:
            headers = {**rejection.headers, "retry-after": str(rejection.retry_after_s)}
            raise ApiError(429, rejection.message, headers)
        try:
            markers = active_markers(req.texts, req.model)
            fault = s.faults.pick(req.model)
            if fault is None and markers:
                fault = next((_FAULT_MARKERS[m] for m in markers if m in _FAULT_MARKERS), None)
            if fault is not None:
                s.stats.faults[fault] += 1
                return await self._fault(request, fault, ms, limiter, rid)

            book = s.config.replay
            answer = make_answer(req, markers, book.lookup(req.last_user_text, req.model) if book else None)
            plan = s.cache.plan(req.model, req.breakpoints, spec.min_cache_tokens)
            ttft_ms = spec.latency_ms + s.faults.extra_latency_ms(req.model)
            if ttft_ms > 0:
                await asyncio.sleep(ttft_ms / 1000.0)
            # The response has started: from now on the written prefixes are readable.
            s.cache.commit(req.model, plan)
            gen_ms = answer.output_tokens * spec.ms_per_output_token
            if gen_ms > 0:
                await asyncio.sleep(gen_ms / 1000.0)

            uncached = req.input_tokens - plan.read - plan.write
            ms.input_tokens += uncached
            ms.output_tokens += answer.output_tokens
            ms.cache_write_tokens += plan.write
            ms.cache_read_tokens += plan.read
            job = request.headers.get(JOB_HEADER)
            if job:
                s.stats.jobs[job] += 1
            s.stats.documents.update(req.documents)
            payload = message_body(_new_id("msg_"), req.model, answer, plan, uncached, "standard")
            return _json(200, payload, {"request-id": rid, **limiter.headers()})
        finally:
            limiter.release()

    async def _fault(
        self, request: web.Request, kind: str, ms: ModelStats, limiter: ModelLimiter, rid: str
    ) -> web.StreamResponse:
        if kind == "timeout":
            ms.errors["timeout"] += 1
            # Hang until the client gives up (aiohttp cancels this handler) or hang_s passes.
            await asyncio.sleep(self.s.config.hang_s)
            raise ApiError(504, "Request timed out")
        if kind == "reset":
            ms.errors["reset"] += 1
            _abort_with_reset(request)
            # Nothing may be written after the reset; the disconnect cancels this handler.
            await asyncio.sleep(self.s.config.hang_s)
            raise asyncio.CancelledError
        rl = limiter.headers()
        if kind == "429":
            raise ApiError(
                429,
                "Number of requests has exceeded your rate limit. Please try again later.",
                {**rl, "retry-after": str(self.s.config.retry_after_s)},
            )
        if kind == "429noretry":
            raise ApiError(429, "Number of requests has exceeded your rate limit.", rl)
        if kind == "spend":
            raise ApiError(429, _SPEND_MESSAGE, {}, {"error_code": "enforced_spend_limit_reached"})
        status, message = _FAULT_ERRORS[kind]
        raise ApiError(status, message)

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        rid = _new_id("req_")
        try:
            self.s.check_auth(request)
            req = parse_messages_request(decode_body(await request.read()), need_max_tokens=False)
            self.s.spec(req.model)
        except ApiError as e:
            return _error(e, rid)
        self.s.stats.count_tokens += 1
        return _json(200, {"input_tokens": req.input_tokens}, {"request-id": rid})

    # -- control endpoints (no auth: loopback test tooling) -------------------------------------
    async def health(self, request: web.Request) -> web.StreamResponse:
        return _json(200, {"status": "ok"}, {})

    async def stats(self, request: web.Request) -> web.StreamResponse:
        if self.s.batches is not None:
            self.s.batches.finalize_due()  # counts of batches due by now, even if no one polled them
        return _json(200, self.s.stats.to_json(), {})

    async def reset(self, request: web.Request) -> web.StreamResponse:
        self.s.reset()
        return _json(200, {"status": "reset"}, {})

    async def get_faults(self, request: web.Request) -> web.StreamResponse:
        return _json(200, self.s.faults.plan.to_json(), {})

    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        rid = _new_id("req_")
        try:
            raw = orjson.loads(await request.read() or b"{}")
            plan = FaultPlan.from_json(raw)
            seed = raw.get("seed") if isinstance(raw, dict) else None
            self.s.faults.set_plan(plan, int(seed) if seed is not None else None)
        except (ValueError, TypeError) as e:
            return _error(invalid(f"faults: {e}"), rid)
        return _json(200, plan.to_json(), {})

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        return _error(ApiError(404, f"Not found: {request.method} {request.path}"), _new_id("req_"))


def build_app(state: MockState) -> web.Application:
    h = Handlers(state)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    r = app.router
    r.add_post("/v1/messages", h.messages)
    r.add_post("/v1/messages/count_tokens", h.count_tokens)
    r.add_get("/_health", h.health)
    r.add_get("/_stats", h.stats)
    r.add_post("/_reset", h.reset)
    r.add_get("/_faults", h.get_faults)
    r.add_post("/_faults", h.set_faults)
    add_batch_routes(app, state)
    r.add_route("*", "/{tail:.*}", h.not_found)
    return app


@dataclass(slots=True)
class RunningServer:
    host: str
    port: int
    state: MockState
    _runner: web.AppRunner

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self._runner.cleanup()


async def start_server(config: MockConfig, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    state = MockState(config)
    # handler_cancellation: a client that hangs up (timeouts, resets) must end its handler, or hung
    # "timeout" faults would pile up and in_flight would never come down.
    runner = web.AppRunner(build_app(state), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    return RunningServer(host, bound, state, runner)
