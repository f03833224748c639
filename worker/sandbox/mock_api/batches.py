"""The stand-in Message Batches API: create, retrieve, list, cancel, delete and JSONL results.

A batch ends ``batch_latency_s`` after create (on the config clock). Its requests are answered at
that moment, in order, through the same parse -> answer -> prompt-cache -> usage path as
``/v1/messages`` with ``usage.service_tier = "batch"``. Request i of n counts as processed at
``created + latency * (i + 1) / n``, so a cancel keeps the results of requests processed before it and
cancels the rest. Params are validated only then, as on the real API: a bad request becomes an
``errored`` result with ``invalid_request_error``.

Per-request outcomes can be forced: fault spec kinds ``batch_expired=P`` / ``batch_errored=P``
(``errored`` with a retryable ``api_error``), or markers ``[[mock:batch-expired]]``,
``[[mock:batch-errored]]`` and ``[[mock:fault-KIND]]`` (errored with that fault's error type) in a
request's prompt. Only succeeded requests are billed and counted in tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from worker.sandbox.mock_api.answers import active_markers, make_answer, message_body
from worker.sandbox.mock_api.errors import ERROR_TYPES, ApiError, invalid
from worker.sandbox.mock_api.request import decode_body, parse_messages_request
from worker.sandbox.mock_api.tokens import canonical_json

if TYPE_CHECKING:
    from worker.sandbox.mock_api.server import MockState

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
EXPIRY_S = 24 * 3600.0
_FAULT_ERROR_STATUS = {
    "400": 400,
    "401": 401,
    "403": 403,
    "429": 429,
    "429noretry": 429,
    "spend": 429,
    "529": 529,
    "500": 500,
    "503": 503,
    "504": 504,
    "timeout": 504,
    "reset": 500,
}
_JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class MockBatch:
    id: str
    requests: list[tuple[str, dict[str, Any]]]
    created_wall: float
    created_clock: float
    latency_s: float
    cancel_clock: float | None = None
    cancel_wall: float | None = None
    ended_clock: float | None = None
    results: list[dict[str, Any]] | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ends_clock(self) -> float:
        return self.created_clock + self.latency_s

    def due(self, now: float) -> bool:
        return self.results is None and (now >= self.ends_clock or self.cancel_clock is not None)

    def processed_by(self, at: float) -> int:
        """How many requests (in order) had been processed at clock time ``at``."""
        if self.latency_s <= 0 or at >= self.ends_clock:
            return len(self.requests)
        return min(len(self.requests), int(len(self.requests) * (at - self.created_clock) / self.latency_s))

    def to_json(self, origin: str) -> dict[str, Any]:
        n = len(self.requests)
        ended = self.results is not None
        counts = {"processing": 0 if ended else n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            counts.update(self.counts)
        status = "ended" if ended else ("canceling" if self.cancel_clock is not None else "in_progress")
        ended_at = None
        if ended and self.ended_clock is not None:
            ended_at = _iso(self.created_wall + (self.ended_clock - self.created_clock))
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": _iso(self.created_wall),
            "expires_at": _iso(self.created_wall + EXPIRY_S),
            "ended_at": ended_at,
            "cancel_initiated_at": None if self.cancel_wall is None else _iso(self.cancel_wall),
            "archived_at": None,
            "results_url": f"{origin}/v1/messages/batches/{self.id}/results" if ended else None,
        }


def _request_id() -> str:
    return "req_" + os.urandom(12).hex()


def _json(status: int, payload: Any, rid: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), headers={"request-id": rid}, content_type=_JSON
    )


def _error(err: ApiError, rid: str) -> web.Response:
    return web.Response(
        status=err.status, body=err.body(rid), headers={"request-id": rid, **err.headers}, content_type=_JSON
    )


def _errored(err: ApiError) -> dict[str, Any]:
    rid = _request_id()
    return {"type": "errored", "error": orjson.loads(err.body(rid))}


def parse_create_body(body: dict[str, Any], max_requests: int) -> list[tuple[str, dict[str, Any]]]:
    """Synchronous checks of create: shape, custom_id format and uniqueness, request count."""
    reqs = body.get("requests")
    if not isinstance(reqs, list) or not reqs:
        raise invalid("requests: Field required (a non-empty list)")
    if len(reqs) > max_requests:
        raise ApiError(413, f"requests: a batch may hold at most {max_requests} requests, got {len(reqs)}")
    seen: set[str] = set()
    out: list[tuple[str, dict[str, Any]]] = []
    for i, item in enumerate(reqs):
        if not isinstance(item, dict):
            raise invalid(f"requests.{i}: Input should be an object with custom_id and params")
        cid = item.get("custom_id")
        if not isinstance(cid, str) or not CUSTOM_ID.match(cid):
            raise invalid(f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if cid in seen:
            raise invalid(f"requests.{i}.custom_id: duplicate custom_id {cid!r}; custom_ids must be unique")
        seen.add(cid)
        params = item.get("params")
        if not isinstance(params, dict):
            raise invalid(f"requests.{i}.params: Field required (an object)")
        out.append((cid, params))
    return out


class BatchStore:
    """All batches of one server, newest last, and the routes that serve them."""

    def __init__(self, state: MockState) -> None:
        self.s = state
        self.batches: dict[str, MockBatch] = {}
        self._order: list[str] = []
        self._billed: set[bytes] = set()
        self._rng = random.Random(state.config.seed)
        self._timers: list[asyncio.TimerHandle] = []

    # -- lifecycle ---------------------------------------------------------------------------------
    def finalize_due(self) -> None:
        now = self.s.config.clock()
        for bid in self._order:
            b = self.batches[bid]
            if b.due(now):
                self._finalize(b, now)

    def _finalize(self, b: MockBatch, now: float) -> None:
        done = b.processed_by(b.cancel_clock if b.cancel_clock is not None else now)
        results: list[dict[str, Any]] = []
        for i, (cid, params) in enumerate(b.requests):
            result = self._process(cid, params) if i < done else {"type": "canceled"}
            results.append({"custom_id": cid, "result": result})
        counts = {"succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        stats = self.s.stats.batches
        for r in results:
            kind = r["result"]["type"]
            counts[kind] += 1
            setattr(stats, kind, getattr(stats, kind) + 1)
        self._rng.shuffle(results)
        b.results, b.counts = results, counts
        b.ended_clock = (
            min(now, b.ends_clock) if b.cancel_clock is None else max(b.cancel_clock, b.created_clock)
        )

    def _process(self, cid: str, params: dict[str, Any]) -> dict[str, Any]:
        s = self.s
        try:
            req = parse_messages_request(params)
            spec = s.spec(req.model)
            if req.input_tokens > spec.context_window:
                raise invalid(
                    f"prompt is too long: {req.input_tokens} tokens > {spec.context_window} maximum"
                )
            if req.max_tokens > spec.max_output_tokens:
                raise invalid(
                    f"max_tokens: {req.max_tokens} > {spec.max_output_tokens}, which is the maximum allowed "
                    f"number of output tokens for {req.model}"
                )
        except ApiError as e:
            return _errored(e)
        ms = s.stats.batch_model(req.model)
        ms.requests += 1
        markers = active_markers(req.texts, req.model)
        outcome = s.faults.pick_batch(req.model)
        if "batch-expired" in markers:
            outcome = "batch_expired"
        elif "batch-errored" in markers:
            outcome = "batch_errored"
        if outcome == "batch_expired":
            return {"type": "expired"}
        if outcome == "batch_errored":
            ms.errors["500"] += 1
            return _errored(ApiError(500, "Internal server error"))
        fault = next(
            (m[6:] for m in markers if m.startswith("fault-") and m[6:] in _FAULT_ERROR_STATUS), None
        )
        if fault is not None:
            status = _FAULT_ERROR_STATUS[fault]
            ms.errors[str(status)] += 1
            return _errored(ApiError(status, f"injected {ERROR_TYPES.get(status, 'api_error')}"))

        answer = make_answer(req, markers)
        plan = s.cache.plan(req.model, req.breakpoints, spec.min_cache_tokens)
        s.cache.commit(req.model, plan)
        uncached = req.input_tokens - plan.read - plan.write
        ms.input_tokens += uncached
        ms.output_tokens += answer.output_tokens
        ms.cache_write_tokens += plan.write
        ms.cache_read_tokens += plan.read
        key = hashlib.blake2b((cid + "\0" + canonical_json(params)).encode(), digest_size=16).digest()
        if key in self._billed:
            s.stats.batches.duplicate_requests += 1
        self._billed.add(key)
        message = message_body("msg_" + os.urandom(12).hex(), req.model, answer, plan, uncached, "batch")
        return {"type": "succeeded", "message": message}

    def _open(self, request: web.Request) -> MockBatch:
        """The batch a request names, for a caller with a key, with any batch that is due ended first."""
        self.s.check_auth(request)
        self.finalize_due()
        return self._get(request)

    def _get(self, request: web.Request) -> MockBatch:
        bid = request.match_info["batch_id"]
        b = self.batches.get(bid)
        if b is None:
            raise ApiError(404, f"message_batch {bid} not found")
        return b

    def _schedule(self, b: MockBatch) -> None:
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if not t.cancelled()]
        self._timers.append(loop.call_later(max(0.0, b.latency_s) + 0.001, self.finalize_due))

    def close(self) -> None:
        for t in self._timers:
            t.cancel()
        self._timers.clear()

    # -- handlers ----------------------------------------------------------------------------------
    async def _read_limited(self, request: web.Request) -> bytes:
        limit = self.s.config.batch_max_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, f"Request exceeds the maximum batch size of {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"Request exceeds the maximum batch size of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def create(self, request: web.Request) -> web.StreamResponse:
        rid = _request_id()
        try:
            self.s.check_auth(request)
            body = decode_body(await self._read_limited(request))
            reqs = parse_create_body(body, self.s.config.batch_max_requests)
            self.finalize_due()
            cap = self.s.config.batch_queue_cap
            if cap is not None:
                waiting = sum(len(b.requests) for b in self.batches.values() if b.results is None)
                if waiting + len(reqs) > cap:
                    raise ApiError(
                        429,
                        f"Number of requests waiting in the batch queue would exceed the limit of {cap}",
                        {"retry-after": str(self.s.config.retry_after_s)},
                    )
        except ApiError as e:
            return _error(e, rid)
        b = MockBatch(
            id="msgbatch_01" + os.urandom(12).hex(),
            requests=reqs,
            created_wall=time.time(),
            created_clock=self.s.config.clock(),
            latency_s=self.s.config.batch_latency_s,
        )
        self.batches[b.id] = b
        self._order.append(b.id)
        stats = self.s.stats.batches
        stats.created += 1
        stats.requests += len(reqs)
        self._schedule(b)
        if self.s.config.batch_create_delay_s > 0:
            await asyncio.sleep(self.s.config.batch_create_delay_s)
        return _json(200, b.to_json(_origin(request)), rid)

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        rid = _request_id()
        try:
            b = self._open(request)
        except ApiError as e:
            return _error(e, rid)
        return _json(200, b.to_json(_origin(request)), rid)

    async def list_batches(self, request: web.Request) -> web.StreamResponse:
        rid = _request_id()
        try:
            self.s.check_auth(request)
            self.finalize_due()
            ids = list(reversed(self._order))
            q = request.query
            raw_limit = q.get("limit", "20")
            if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
                raise invalid("limit: Input should be an integer between 1 and 1000")
            limit = int(raw_limit)
            if "after_id" in q:
                ids = ids[_index(ids, q["after_id"]) + 1 :]
                page, has_more = ids[:limit], len(ids) > limit
            elif "before_id" in q:
                ids = ids[: _index(ids, q["before_id"])]
                page, has_more = ids[-limit:], len(ids) > limit
            else:
                page, has_more = ids[:limit], len(ids) > limit
        except ApiError as e:
            return _error(e, rid)
        origin = _origin(request)
        payload = {
            "data": [self.batches[i].to_json(origin) for i in page],
            "has_more": has_more,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
        return _json(200, payload, rid)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        rid = _request_id()
        try:
            b = self._open(request)
        except ApiError as e:
            return _error(e, rid)
        if b.results is None and b.cancel_clock is None:
            b.cancel_clock, b.cancel_wall = self.s.config.clock(), time.time()
            asyncio.get_running_loop().call_soon(self.finalize_due)
        return _json(200, b.to_json(_origin(request)), rid)

    async def delete(self, request: web.Request) -> web.StreamResponse:
        rid = _request_id()
        try:
            b = self._open(request)
            if b.results is None:
                raise invalid(f"message_batch {b.id} is still processing; cancel it and wait for it to end")
        except ApiError as e:
            return _error(e, rid)
        del self.batches[b.id]
        self._order.remove(b.id)
        return _json(200, {"id": b.id, "type": "message_batch_deleted"}, rid)

    async def results(self, request: web.Request) -> web.StreamResponse:
        rid = _request_id()
        try:
            b = self._open(request)
            if b.results is None:
                raise ApiError(404, f"results of message_batch {b.id} are not available until it has ended")
        except ApiError as e:
            return _error(e, rid)
        body = b"".join(orjson.dumps(r) + b"\n" for r in b.results)
        return web.Response(
            status=200, body=body, headers={"request-id": rid}, content_type="application/binary"
        )


def _index(ids: list[str], bid: str) -> int:
    try:
        return ids.index(bid)
    except ValueError:
        raise invalid(f"message_batch {bid} not found for pagination") from None


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def add_batch_routes(app: web.Application, state: MockState) -> BatchStore:
    store = BatchStore(state)
    state.batches = store
    r = app.router

    def counted(handler: Handler) -> Handler:
        async def serve(request: web.Request) -> web.StreamResponse:
            state.stats.batches.call()  # every call counts against the batch RPM, refused ones too
            return await handler(request)

        return serve

    r.add_post("/v1/messages/batches", counted(store.create))
    r.add_get("/v1/messages/batches", counted(store.list_batches))
    r.add_get("/v1/messages/batches/{batch_id}", counted(store.retrieve))
    r.add_delete("/v1/messages/batches/{batch_id}", counted(store.delete))
    r.add_post("/v1/messages/batches/{batch_id}/cancel", counted(store.cancel))
    r.add_get("/v1/messages/batches/{batch_id}/results", counted(store.results))

    async def _close(_: web.Application) -> None:
        store.close()

    app.on_cleanup.append(_close)
    return store
