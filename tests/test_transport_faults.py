"""Both HTTP transports (``ROUTEQ_HTTP_TRANSPORT``) fail the same way: every fault the stand-in can inject,
and the network faults it cannot (connection refused, a body cut short, a hang-up before any response),
go through ``make_client`` and ``call`` as a worker makes them and come out of ``faults.classify`` as the
same ``Fault``, with exactly one request sent (the SDK's retries stay off) and the call timeout applied.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, get_args

import anthropic
import pytest

from jobs.settings import Settings
from tests.helpers import StartFn
from worker.pipeline.call import CallResult, call, make_client
from worker.policy.faults import Fault, classify
from worker.sandbox.mock_api import RunningServer
from worker.sandbox.mock_api.faults import FaultPlan

TRANSPORTS: tuple[str, ...] = get_args(Settings.model_fields["http_transport"].annotation)
MODEL = "claude-haiku-4-5"
TIMEOUT_S = 0.5

# stand-in fault kind -> (routeq fault kind, retryable, tier cooldown, escalatable, HTTP status)
STAND_IN: dict[str, tuple[str, bool, bool, bool, int | None]] = {
    "429": ("rate_limit", True, True, False, 429),
    "429noretry": ("rate_limit", True, True, False, 429),
    "spend": ("spend_limit", False, False, False, 429),
    "529": ("overloaded", True, True, True, 529),
    "500": ("server", True, False, False, 500),
    "503": ("server", True, False, False, 503),
    "504": ("timeout", True, False, False, 504),
    "400": ("bad_request", False, False, False, 400),
    "401": ("auth", False, False, False, 401),
    "403": ("permission", False, False, False, 403),
    "timeout": ("timeout", True, False, False, None),
    "reset": ("connection", True, False, False, None),
}


def params(text: str = "Say hello.") -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": text}]}


def settings(transport: str, base_url: str) -> Settings:
    return Settings(
        anthropic_base_url=base_url,
        anthropic_api_key="sk-test-transport",
        call_timeout_s=TIMEOUT_S,
        http_transport=transport,
    )


async def failure(transport: str, base_url: str) -> tuple[BaseException, float]:
    """One call as the worker makes it; what it raised and after how many seconds."""
    client = make_client(settings(transport, base_url))
    t0 = time.monotonic()
    try:
        await call(client, params(), job_id="j-transport")
    except Exception as exc:
        return exc, time.monotonic() - t0
    finally:
        await client.close()
    raise AssertionError(f"{transport}: the call did not fail")


def same(f: Fault) -> tuple[Any, ...]:
    """What the policy acts on; the message text names the transport's own exception and may differ."""
    return (f.kind, f.retryable, f.cooldown_tier, f.escalatable, f.status, f.error_code)


def requests(srv: RunningServer) -> int:
    return sum(int(m["requests"]) for m in srv.state.stats.to_json()["models"].values())


@pytest.mark.parametrize("kind", sorted(STAND_IN))
async def test_every_stand_in_fault_classifies_the_same_on_both_transports(start: StartFn, kind: str) -> None:
    srv = await start(retry_after_s=1)
    srv.state.faults.set_plan(FaultPlan.parse(f"{kind}=1"))
    got: dict[str, Fault] = {}
    for transport in TRANSPORTS:
        before = requests(srv)
        exc, took = await failure(transport, srv.url)
        assert isinstance(exc, anthropic.APIError), (transport, exc)
        got[transport] = classify(exc)
        assert requests(srv) - before == 1, f"{transport}: the SDK retried a {kind}"
        if kind == "timeout":
            assert TIMEOUT_S * 0.9 <= took < TIMEOUT_S + 2.0, (transport, took)
    kind_, retryable, cooldown, escalatable, status = STAND_IN[kind]
    for transport, f in got.items():
        assert (f.kind, f.retryable, f.cooldown_tier, f.escalatable, f.status) == (
            kind_,
            retryable,
            cooldown,
            escalatable,
            status,
        ), (transport, f)
    first, *rest = got.values()
    for f in rest:
        assert same(f) == same(first), got
        if first.retry_after_s is None:
            assert f.retry_after_s is None
        else:  # absolute resets are read against the server's Date header, which has 1 s resolution
            assert f.retry_after_s is not None and abs(f.retry_after_s - first.retry_after_s) <= 1.0
    if kind == "429":
        assert all(f.retry_after_s == 1.0 for f in got.values())
    if kind == "spend":
        assert all(f.error_code == "enforced_spend_limit_reached" for f in got.values())


# --- faults below HTTP: a raw TCP server that misbehaves on purpose ----------------------------------

Misbehave = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(h.split(b":", 1)[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0
    )
    await reader.readexactly(length)


async def short_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A 200 that promises 2,000 bytes and closes after 30."""
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2000\r\n\r\n")
    writer.write(b'{"id": "msg_01", "type": "messa')
    await writer.drain()
    writer.close()


async def short_chunked_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A chunked 200 that closes inside a chunk."""
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
    writer.write(b'400\r\n{"id": "msg_01", "type": "messa')
    await writer.drain()
    writer.close()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The request is read and the connection closed without a byte of response."""
    await read_request(reader)
    writer.close()


async def silent_after_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Headers, then nothing: the read timeout, not a connect one, must end the call."""
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(30)
    writer.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Misbehave], Awaitable[str]]]:
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[Any]] = set()

    async def _start(handler: Misbehave) -> str:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await handler(reader, writer)
            finally:
                handlers.discard(task)

        srv = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    yield _start
    for srv in servers:
        srv.close()
    for task in list(handlers):  # a handler still hanging on a client that gave up
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)


RAW: dict[str, tuple[Misbehave, str]] = {
    "short_body": (short_body, "connection"),
    "short_chunked_body": (short_chunked_body, "connection"),
    "hang_up": (hang_up, "connection"),
    "silent_after_headers": (silent_after_headers, "timeout"),
}


@pytest.mark.parametrize("case", sorted(RAW))
async def test_network_faults_classify_the_same_on_both_transports(
    raw_server: Callable[[Misbehave], Awaitable[str]], case: str
) -> None:
    handler, expected = RAW[case]
    url = await raw_server(handler)
    for transport in TRANSPORTS:
        exc, took = await failure(transport, url)
        f = classify(exc)
        assert (f.kind, f.retryable, f.status) == (expected, True, None), (transport, exc, f)
        if expected == "timeout":
            assert TIMEOUT_S * 0.9 <= took < TIMEOUT_S + 2.0, (transport, took)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_connection_refused_is_a_connection_fault(transport: str) -> None:
    exc, took = await failure(transport, f"http://127.0.0.1:{closed_port()}")
    assert isinstance(exc, anthropic.APIConnectionError) and not isinstance(exc, anthropic.APITimeoutError)
    f = classify(exc)
    assert (f.kind, f.retryable, f.outage) == ("connection", True, True)
    assert took < TIMEOUT_S


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_answer_reads_the_same_and_the_pool_is_not_the_limit(start: StartFn, transport: str) -> None:
    """A worker holds up to its intake of calls open at once; neither transport may queue them in its pool
    (the SDK's limit is 1,000 connections; aiohttp's own default would be 100)."""
    n = 150
    srv = await start(latency_ms=2000)
    client = make_client(settings(transport, srv.url).model_copy(update={"call_timeout_s": 30.0}))
    try:
        got = await asyncio.gather(*(call(client, params(f"Item {i}."), job_id=f"j{i}") for i in range(n)))
    finally:
        await client.close()
    assert all(isinstance(r, CallResult) and r.text and r.usage.output_tokens > 0 for r in got)
    assert {r.model for r in got} == {MODEL}
    assert all(r.request_id and r.message_id.startswith("msg_") for r in got)
    model_stats = srv.state.stats.to_json()["models"]
    assert sum(m["max_in_flight"] for m in model_stats.values()) == n, model_stats


async def test_the_setting_picks_the_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEQ_HTTP_TRANSPORT", "httpx")
    assert Settings().http_transport == "httpx"
    monkeypatch.setenv("ROUTEQ_HTTP_TRANSPORT", "curl")
    with pytest.raises(ValueError, match="http_transport"):
        Settings()
    monkeypatch.delenv("ROUTEQ_HTTP_TRANSPORT")
    assert Settings().http_transport == "aiohttp"
    for transport in TRANSPORTS:
        client = make_client(settings(transport, "http://127.0.0.1:9"))
        try:
            used = type(client._client._transport).__name__  # the SDK's own httpx2 client
        finally:
            await client.close()
        assert used == {"httpx": "AsyncHTTPTransport", "aiohttp": "AiohttpTransport"}[transport]
