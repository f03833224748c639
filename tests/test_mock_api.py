"""The stand-in Messages API, exercised through the real anthropic SDK over loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import jsonschema
import pytest

from tests.helpers import FakeClock, StartFn
from worker.sandbox.mock_api import FaultPlan, ModelOverrides, RunningServer
from worker.sandbox.mock_api.caching import PromptCache
from worker.sandbox.mock_api.request import parse_messages_request
from worker.sandbox.mock_api.tokens import count_text

HAIKU, SONNET, OPUS = "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-7"
ROOT = Path(__file__).resolve().parent.parent


def client(srv: RunningServer, **kw: Any) -> anthropic.AsyncAnthropic:
    kw.setdefault("api_key", "test-key")
    return anthropic.AsyncAnthropic(base_url=srv.url, max_retries=0, **kw)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def create(c: anthropic.AsyncAnthropic, model: str = HAIKU, **kw: Any) -> Any:
    kw.setdefault("max_tokens", 512)
    kw.setdefault("messages", user("hello there"))
    return await c.messages.create(model=model, **kw)


async def get_json(srv: RunningServer, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(srv.url + path) as r:
        return await r.json()


# -- wire format --------------------------------------------------------------------------------------


async def test_happy_path_wire_format_and_usage(start: StartFn) -> None:
    srv = await start()
    c = client(srv)
    raw = await c.messages.with_raw_response.create(model=HAIKU, max_tokens=512, messages=user("x" * 40))
    assert raw.headers["request-id"].startswith("req_")
    msg = await raw.parse()
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == HAIKU and msg.stop_reason == "end_turn" and msg.stop_sequence is None
    block = msg.content[0]
    assert isinstance(block, anthropic.types.TextBlock)
    text = block.text
    assert text and msg.usage.output_tokens == count_text(text)
    assert msg.usage.input_tokens == 10
    assert msg.usage.cache_creation_input_tokens == 0 and msg.usage.cache_read_input_tokens == 0
    assert msg.usage.cache_creation is not None and msg.usage.cache_creation.ephemeral_5m_input_tokens == 0
    await c.close()


async def test_count_tokens_matches_usage_and_rule(start: StartFn) -> None:
    srv = await start()
    c = client(srv)
    tool = {"name": "lookup", "description": "d", "input_schema": {"type": "object", "properties": {}}}
    params: dict[str, Any] = {
        "system": [{"type": "text", "text": "s" * 101}],
        "messages": [
            {"role": "user", "content": "u" * 7},
            {"role": "assistant", "content": [{"type": "text", "text": "a" * 9}]},
            {"role": "user", "content": [{"type": "text", "text": "q" * 4}]},
        ],
        "tools": [tool],
    }
    counted = await c.messages.count_tokens(model=SONNET, **params)
    msg = await c.messages.create(model=SONNET, max_tokens=64, **params)
    tool_json = json.dumps(tool, sort_keys=True, separators=(",", ":"))
    expected = count_text(tool_json) + 26 + 2 + 3 + 1
    assert counted.input_tokens == msg.usage.input_tokens == expected
    await c.close()


async def test_auth_required(start: StartFn) -> None:
    srv = await start(api_key="right-key")
    c = client(srv, api_key="wrong-key")
    with pytest.raises(anthropic.AuthenticationError):
        await create(c)
    ok = client(srv, api_key="right-key")
    assert (await create(ok)).stop_reason == "end_turn"
    body = {"model": HAIKU, "max_tokens": 5, "messages": user("hi")}
    async with aiohttp.ClientSession() as s:
        async with s.post(srv.url + "/v1/messages", json=body) as r:
            assert r.status == 401
            err = await r.json()
            assert err["type"] == "error" and err["error"]["type"] == "authentication_error"
            assert err["request_id"] == r.headers["request-id"]
        async with s.post(srv.url + "/v1/messages", json=body, headers={"x-api-key": "right-key"}) as r:
            assert r.status == 200
        async with s.get(srv.url + "/v1/nothing", headers={"x-api-key": "right-key"}) as r:
            assert r.status == 404 and (await r.json())["error"]["type"] == "not_found_error"
    await c.close()
    await ok.close()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"max_tokens": 5, "messages": user("hi")}, "model"),
        ({"model": HAIKU, "messages": user("hi")}, "max_tokens"),
        ({"model": HAIKU, "max_tokens": 5}, "messages"),
        ({"model": "gpt-4o", "max_tokens": 5, "messages": user("hi")}, "gpt-4o"),
        ({"model": HAIKU, "max_tokens": 5, "messages": user("x" * 800_004)}, "prompt is too long"),
    ],
)
async def test_malformed_requests_are_400(start: StartFn, body: dict[str, Any], needle: str) -> None:
    srv = await start()
    headers = {"x-api-key": "k"}
    url = srv.url + "/v1/messages"
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers) as r:
        assert r.status == 400
        err = await r.json()
    assert err["error"]["type"] == "invalid_request_error" and needle in err["error"]["message"]


async def test_too_many_breakpoints_is_bad_request(start: StartFn) -> None:
    srv = await start()
    c = client(srv)
    cc = {"type": "ephemeral"}
    blocks = [{"type": "text", "text": f"part {i}", "cache_control": cc} for i in range(5)]
    with pytest.raises(anthropic.BadRequestError, match="maximum of 4"):
        await create(c, messages=[{"role": "user", "content": blocks}])
    await create(c, messages=[{"role": "user", "content": blocks[:4]}])
    await c.close()


# -- answers ------------------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"enum": ["spam", "ham", "unsure"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "count": {"type": "integer", "minimum": 3, "maximum": 9, "multipleOf": 3},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 12}, "minItems": 2},
        "meta": {"$ref": "#/$defs/meta"},
        "flag": {"type": "boolean"},
    },
    "required": ["label", "score", "count", "tags", "meta", "flag"],
    "additionalProperties": False,
    "$defs": {
        "meta": {
            "type": "object",
            "properties": {"d": {"format": "date", "type": "string"}},
            "required": ["d"],
        }
    },
}


async def test_json_answer_is_an_instance_of_the_schema(start: StartFn) -> None:
    srv = await start()
    c = client(srv)
    system = "Respond with JSON matching this schema: " + json.dumps(SCHEMA)
    answers = []
    for model in (HAIKU, SONNET, OPUS):
        msg = await create(c, model, system=system, messages=user("Is this spam? buy now"))
        data = json.loads(msg.content[0].text)
        jsonschema.validate(data, SCHEMA)
        answers.append(data)
    assert answers[0] == answers[1] == answers[2]
    plain = await create(c, messages=user("Reply in JSON please."))
    assert isinstance(json.loads(plain.content[0].text), dict)
    await c.close()


async def test_classification_agrees_across_models_unless_differ(start: StartFn) -> None:
    srv = await start()
    c = client(srv)
    prompt = "Classify the ticket.\nLabels: billing, bug, feature, other\nTicket: app crashes"
    got = {m: (await create(c, m, messages=user(prompt))).content[0].text for m in (HAIKU, SONNET, OPUS)}
    assert len(set(got.values())) == 1 and got[HAIKU].startswith("label: ")
    assert got[HAIKU].removeprefix("label: ") in {"billing", "bug", "feature", "other"}
    differ = prompt + " [[mock:differ:haiku]]"
    h = (await create(c, HAIKU, messages=user(differ))).content[0].text
    s = (await create(c, SONNET, messages=user(differ))).content[0].text
    assert h != s and h.startswith("label: ")
    await c.close()


async def test_text_length_is_deterministic_and_capped(start: StartFn) -> None:
    srv = await start()
    c = client(srv)
    a = await create(c, messages=user("tell me about caching"), max_tokens=4000)
    b = await create(c, messages=user("tell me about caching"), max_tokens=4000)
    assert a.content[0].text == b.content[0].text and a.stop_reason == "end_turn"
    assert 16 <= a.usage.output_tokens <= 256
    short = await create(c, messages=user("tell me about caching"), max_tokens=5)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 5
    assert a.content[0].text.startswith(short.content[0].text) and len(short.content[0].text) <= 20
    await c.close()


async def test_markers(start: StartFn) -> None:
    srv = await start()
    c = client(srv)
    refused = await create(c, messages=user("do it [[mock:refuse]]"))
    assert refused.stop_reason == "refusal" and "sorry" in refused.content[0].text
    only_haiku = "do it [[mock:refuse:haiku]]"
    assert (await create(c, HAIKU, messages=user(only_haiku))).stop_reason == "refusal"
    assert (await create(c, SONNET, messages=user(only_haiku))).stop_reason == "end_turn"
    cut = await create(c, messages=user("Answer in JSON [[mock:truncate]]"), max_tokens=300)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 300
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.content[0].text)
    bad = await create(
        c,
        system="Respond with JSON matching this schema: " + json.dumps(SCHEMA),
        messages=user("x [[mock:bad-json]]"),
    )
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad.content[0].text)
    empty = await create(c, messages=user("[[mock:empty]]"))
    assert empty.content == [] and empty.stop_reason == "end_turn"
    with pytest.raises(anthropic.OverloadedError):
        await create(c, SONNET, messages=user("x [[mock:fault-529:sonnet]]"))
    await c.close()


# -- prompt caching -----------------------------------------------------------------------------------


def cached_system(chars: int, ttl: str | None = None) -> list[dict[str, Any]]:
    cc: dict[str, Any] = {"type": "ephemeral"}
    if ttl:
        cc["ttl"] = ttl
    return [{"type": "text", "text": "c" * chars, "cache_control": cc}]


async def test_cache_write_then_read(start: StartFn) -> None:
    srv = await start()
    c = client(srv)
    system = cached_system(4096 * 4)  # exactly haiku's 4096-token minimum
    first = await create(c, HAIKU, system=system, messages=user("q" * 8))
    assert first.usage.cache_creation_input_tokens == 4096 and first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 4096
    assert first.usage.input_tokens == 2
    second = await create(c, HAIKU, system=system, messages=user("other question"))
    assert second.usage.cache_read_input_tokens == 4096 and second.usage.cache_creation_input_tokens == 0
    # Caches are per model: sonnet has not seen this prefix.
    other = await create(c, SONNET, system=system, messages=user("q"))
    assert other.usage.cache_creation_input_tokens == 4096
    await c.close()


async def test_prefix_below_minimum_is_not_cached(start: StartFn) -> None:
    srv = await start()
    c = client(srv)
    system = cached_system(4095 * 4)
    for _ in range(2):
        msg = await create(c, HAIKU, system=system)
        assert msg.usage.cache_creation_input_tokens == 0 and msg.usage.cache_read_input_tokens == 0
        assert msg.usage.input_tokens == 4095 + 3
    # The same prefix clears sonnet's lower minimum.
    assert (await create(c, SONNET, system=system)).usage.cache_creation_input_tokens == 4095
    await c.close()


async def test_concurrent_cold_requests_all_write(start: StartFn) -> None:
    srv = await start(latency_ms=100)
    c = client(srv)
    system = cached_system(1024 * 4)
    burst = await asyncio.gather(*(create(c, SONNET, system=system) for _ in range(4)))
    assert [m.usage.cache_creation_input_tokens for m in burst] == [1024] * 4
    after = await create(c, SONNET, system=system)
    assert after.usage.cache_read_input_tokens == 1024
    await c.close()


async def test_ttl_expiry_and_refresh_with_injected_clock(start: StartFn) -> None:
    clock = FakeClock()
    srv = await start(clock=clock)
    c = client(srv)
    system = cached_system(1024 * 4)
    assert (await create(c, SONNET, system=system)).usage.cache_creation_input_tokens == 1024
    clock.now += 299
    assert (await create(c, SONNET, system=system)).usage.cache_read_input_tokens == 1024  # refreshes
    clock.now += 299
    assert (await create(c, SONNET, system=system)).usage.cache_read_input_tokens == 1024
    clock.now += 301
    expired = await create(c, SONNET, system=system)
    assert expired.usage.cache_read_input_tokens == 0 and expired.usage.cache_creation_input_tokens == 1024
    await c.close()


async def test_one_hour_split_and_partial_read(start: StartFn) -> None:
    clock = FakeClock()
    srv = await start(clock=clock)
    c = client(srv)
    system = cached_system(2000 * 4, "1h")
    doc = {"type": "text", "text": "d" * 800 * 4, "cache_control": {"type": "ephemeral"}}
    messages = [{"role": "user", "content": [doc, {"type": "text", "text": "question"}]}]
    first = await create(c, SONNET, system=system, messages=messages)
    cc = first.usage.cache_creation
    assert (cc.ephemeral_1h_input_tokens, cc.ephemeral_5m_input_tokens) == (2000, 800)
    assert first.usage.cache_creation_input_tokens == 2800 and first.usage.input_tokens == 2
    clock.now += 600  # the 5m entry is gone, the 1h one lives: read 2000, rewrite the 800 tail
    second = await create(c, SONNET, system=system, messages=messages)
    assert second.usage.cache_read_input_tokens == 2000
    assert second.usage.cache_creation.ephemeral_5m_input_tokens == 800
    wrong_order = [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    with pytest.raises(anthropic.BadRequestError, match="1h"):
        await create(c, SONNET, system=cached_system(10), messages=[{"role": "user", "content": wrong_order}])
    await c.close()


def test_cache_keys_follow_prefix_order() -> None:
    """A change before a breakpoint (tools, system) invalidates it; a change after it does not."""
    cache = PromptCache(FakeClock())

    def plan(tools_desc: str, system: str, tail: str) -> tuple[int, int]:
        body = {
            "model": SONNET,
            "max_tokens": 5,
            "tools": [{"name": "t", "description": tools_desc, "input_schema": {}}],
            "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
            "messages": user(tail),
        }
        req = parse_messages_request(body)
        p = cache.plan(SONNET, req.breakpoints, 1024)
        cache.commit(SONNET, p)
        return p.read, p.write

    base = "s" * 5000
    _, wrote = plan("a", base, "one")
    assert wrote > 1024
    assert plan("a", base, "two") == (wrote, 0)
    assert plan("b", base, "one") == (0, wrote)
    assert plan("b", base + "!", "one")[0] == 0


# -- latency, limits, faults --------------------------------------------------------------------------


async def test_latency_is_honoured(start: StartFn) -> None:
    srv = await start(latency_ms=20, models={SONNET: ModelOverrides(latency_ms=250, ms_per_output_token=1.0)})
    c = client(srv)
    t = time.monotonic()
    msg = await create(c, SONNET, max_tokens=100)
    assert time.monotonic() - t >= 0.25 + msg.usage.output_tokens / 1000 - 0.01
    t = time.monotonic()
    await create(c, HAIKU)
    assert 0.02 <= time.monotonic() - t < 0.25  # the global latency, not sonnet's
    await c.close()


async def test_concurrency_limit_answers_429(start: StartFn) -> None:
    srv = await start(latency_ms=300, models={HAIKU: ModelOverrides(max_concurrency=1)})
    c = client(srv)
    results = await asyncio.gather(create(c), create(c), return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], anthropic.RateLimitError)
    assert errors[0].response.headers["retry-after"] == "1"
    await c.close()


async def test_rpm_limit_headers_and_retry_after(start: StartFn) -> None:
    clock = FakeClock()
    srv = await start(clock=clock, models={HAIKU: ModelOverrides(rpm=2)})
    c = client(srv)
    raw = await c.messages.with_raw_response.create(model=HAIKU, max_tokens=5, messages=user("a"))
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "1"
    assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    await create(c)
    with pytest.raises(anthropic.RateLimitError) as info:
        await create(c)
    assert info.value.response.headers["retry-after"] == "30"
    assert info.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    clock.now += 30
    await create(c)
    await c.close()


@pytest.mark.parametrize(
    ("kind", "exc"),
    [
        ("429", anthropic.RateLimitError),
        ("429noretry", anthropic.RateLimitError),
        ("spend", anthropic.RateLimitError),
        ("529", anthropic.OverloadedError),
        ("500", anthropic.InternalServerError),
        ("503", anthropic.InternalServerError),
        ("504", anthropic.InternalServerError),
        ("timeout", anthropic.APITimeoutError),
        ("reset", anthropic.APIConnectionError),
    ],
)
async def test_fault_kinds_surface_as_sdk_errors(start: StartFn, kind: str, exc: type[Exception]) -> None:
    srv = await start(faults=FaultPlan.parse(f"{kind}=1"), hang_s=5)
    c = client(srv, timeout=0.3)
    with pytest.raises(exc) as info:
        await create(c)
    err = info.value
    if isinstance(err, anthropic.APIStatusError):
        assert err.status_code == (int(kind[:3]) if kind[0].isdigit() else 429)
        has_retry_after = "retry-after" in err.response.headers
        assert has_retry_after == (kind == "429")
        if kind == "spend":
            assert err.body["error"]["details"]["error_code"] == "enforced_spend_limit_reached"  # type: ignore[index]
    else:
        assert not isinstance(err, anthropic.APIStatusError)
    await asyncio.sleep(0.05)  # the server notices the hang-up
    stats = await get_json(srv, "/_stats")
    assert stats["faults"] == {kind: 1}
    assert stats["models"][HAIKU]["in_flight"] == 0 and stats["models"][HAIKU]["output_tokens"] == 0
    await c.close()


async def test_faults_per_model_seeded_and_runtime_changes(start: StartFn) -> None:
    async def outcomes(seed: int) -> list[str]:
        srv = await start(faults=FaultPlan.parse("529=0.5,sonnet:529=0"), seed=seed)
        c = client(srv)
        out = []
        for _ in range(16):
            try:
                await create(c, HAIKU)
                out.append("ok")
            except anthropic.OverloadedError:
                out.append("529")
        for _ in range(5):
            await create(c, SONNET)  # sonnet's own rule overrides the default
        await c.close()
        return out

    a, b = await outcomes(7), await outcomes(7)
    assert a == b and "ok" in a and "529" in a
    srv = await start()
    async with aiohttp.ClientSession() as s:
        async with s.post(srv.url + "/_faults", json={"spec": "haiku:503=1"}) as r:
            assert r.status == 200
        async with s.post(srv.url + "/_faults", json={"spec": "bogus=1"}) as r:
            assert r.status == 400
    assert (await get_json(srv, "/_faults"))["models"] == {"haiku": {"503": 1.0}}
    c = client(srv)
    with pytest.raises(anthropic.InternalServerError):
        await create(c, HAIKU)
    await create(c, OPUS)
    await c.close()


async def test_stats_jobs_and_reset(start: StartFn) -> None:
    srv = await start(faults=FaultPlan.parse("haiku:529=1"))
    c = client(srv)
    system = cached_system(1024 * 4)
    for job in ("job-a", "job-a", "job-b"):
        await create(c, SONNET, system=system, extra_headers={"x-routeq-job-id": job})
    with pytest.raises(anthropic.OverloadedError):
        await create(c, HAIKU, extra_headers={"x-routeq-job-id": "job-c"})
    stats = await get_json(srv, "/_stats")
    son = stats["models"][SONNET]
    assert son["requests"] == 3 and son["in_flight"] == 0 and son["max_in_flight"] == 1
    assert son["cache_write_tokens"] == 1024 and son["cache_read_tokens"] == 2048
    assert son["input_tokens"] == 3 * count_text("hello there") and son["output_tokens"] > 0
    assert stats["models"][HAIKU]["errors"] == {"529": 1} and stats["models"][HAIKU]["input_tokens"] == 0
    assert stats["jobs"] == {"job-a": 2, "job-b": 1} and stats["faults"] == {"529": 1}
    async with aiohttp.ClientSession() as s, s.post(srv.url + "/_reset") as r:
        assert r.status == 200
    assert (await get_json(srv, "/_stats"))["models"] == {}
    assert (await get_json(srv, "/_health"))["status"] == "ok"
    assert (await create(c, HAIKU)).stop_reason == "end_turn"  # faults cleared
    assert (await create(c, SONNET, system=system)).usage.cache_creation_input_tokens == 1024  # cache cleared
    await c.close()


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    cfg = tmp_path / "models.json"
    cfg.write_text(json.dumps({"models": {"claude-haiku-4-5": {"latency_ms": 5, "rpm": 600}}}))
    args = ["--port", "0", "--port-file", str(port_file), "--config", str(cfg), "--faults", "529=0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.sandbox.mock_api", *args], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(port_file.read_text())
        assert line.strip() == f"mock-api listening on http://127.0.0.1:{port}"

        async def one() -> str:
            c = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{port}", api_key="k", max_retries=0)
            raw = await c.messages.with_raw_response.create(model=HAIKU, max_tokens=5, messages=user("a"))
            await c.close()
            return raw.headers["anthropic-ratelimit-requests-limit"]

        assert asyncio.run(one()) == "600"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# -- pure pieces --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "minLength": 30, "maxLength": 31},
        {"type": "integer", "exclusiveMinimum": 5, "exclusiveMaximum": 7},
        {"type": "number", "minimum": -2.5, "maximum": -2.5},
        {"type": ["null", "boolean"]},
        {"type": "array", "items": {"enum": [1, 2]}, "minItems": 0, "maxItems": 0},
        {"type": "array", "prefixItems": [{"const": "a"}, {"type": "integer"}], "minItems": 2},
        {
            "anyOf": [
                {"type": "object", "required": ["x"], "properties": {"x": {"type": "string"}}},
                {"type": "null"},
            ]
        },
        {"allOf": [{"required": ["a"], "properties": {"a": {"type": "integer"}}}, {"required": ["b"]}]},
        {
            "type": "object",
            "required": ["node"],
            "properties": {"node": {"$ref": "#/definitions/n"}},
            "definitions": {
                "n": {"type": "object", "required": ["v"], "properties": {"v": {"format": "email"}}}
            },
        },
    ],
)
def test_schema_instances_validate(schema: dict[str, Any]) -> None:
    from worker.sandbox.mock_api.schema_instance import instance_of

    for seed in (b"a", b"b", b"c"):
        jsonschema.validate(instance_of(schema, seed), schema)
        jsonschema.validate(instance_of(schema, seed, variant=1), schema)


def test_fault_plan_parsing() -> None:
    plan = FaultPlan.parse("429=0.1, haiku:529=0.5,slow=0.2", slow_ms=50)
    assert plan.for_model("claude-haiku-4-5") == {"429": 0.1, "529": 0.5, "slow": 0.2}
    assert plan.for_model("claude-opus-4-7") == {"429": 0.1, "slow": 0.2}
    assert FaultPlan.from_json(plan.to_json()) == plan
    for bad in ("teapot=0.1", "529=2", "529"):
        with pytest.raises(ValueError):
            FaultPlan.parse(bad)


async def test_streaming_and_empty_text_are_rejected(start: StartFn) -> None:
    srv = await start()
    c = client(srv)
    with pytest.raises(anthropic.BadRequestError, match="stream"):
        await c.messages.create(model=HAIKU, max_tokens=5, messages=user("hi"), stream=True)
    with pytest.raises(anthropic.BadRequestError, match="non-empty"):
        await create(c, messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}])
    await c.close()
