"""The stand-in Message Batches API, exercised through the real anthropic SDK over loopback."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anthropic
import pytest

from tests.helpers import FakeClock, StartFn
from worker.sandbox.mock_api import FaultPlan, MockConfig, RunningServer, add_arguments
from worker.sandbox.mock_api.cli import config_from_args

HAIKU, SONNET = "claude-haiku-4-5", "claude-sonnet-4-6"


def client(srv: RunningServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=srv.url, api_key="test-key", max_retries=0)


def params(text: str, model: str = HAIKU, **kw: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": text}], **kw}


def reqs(n: int, prefix: str = "r", model: str = HAIKU) -> list[Any]:
    return [{"custom_id": f"{prefix}{i}", "params": params(f"question number {i}", model)} for i in range(n)]


async def stats(srv: RunningServer) -> Any:
    async with aiohttp.ClientSession() as s, s.get(srv.url + "/_stats") as r:
        return await r.json()


async def results(c: anthropic.AsyncAnthropic, bid: str) -> list[Any]:
    return [r async for r in await c.messages.batches.results(bid)]


async def test_lifecycle_results_on_own_host_and_batch_usage(start: StartFn) -> None:
    clock = FakeClock()
    srv = await start(clock=clock, batch_latency_s=60.0, seed=7)
    c = client(srv)
    batch = await c.messages.batches.create(requests=reqs(30))
    assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress" and batch.results_url is None
    assert batch.request_counts.processing == 30 and batch.request_counts.succeeded == 0
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        await c.messages.batches.results(batch.id)

    clock.now += 59.0
    assert (await c.messages.batches.retrieve(batch.id)).processing_status == "in_progress"
    clock.now += 1.0
    ended = await c.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert (ended.ended_at - ended.created_at).total_seconds() == pytest.approx(60.0, abs=0.01)
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.expired, counts.canceled) == (
        0,
        30,
        0,
        0,
        0,
    )
    assert ended.results_url is not None
    url = urlsplit(ended.results_url)
    assert f"{url.scheme}://{url.netloc}" == srv.url and url.path.endswith(f"/{batch.id}/results")

    got = await results(c, batch.id)
    ids = [r.custom_id for r in got]
    assert sorted(ids) == sorted(f"r{i}" for i in range(30)) and ids != [f"r{i}" for i in range(30)]
    # Same answer and usage as the realtime endpoint for the same params, billed at the batch tier.
    real = await c.messages.create(**params("question number 3"))
    one = next(r.result for r in got if r.custom_id == "r3")
    assert one.type == "succeeded"
    assert one.message.content == real.content
    assert one.message.usage.input_tokens == real.usage.input_tokens
    assert one.message.usage.output_tokens == real.usage.output_tokens
    assert one.message.usage.service_tier == "batch" and real.usage.service_tier == "standard"

    st = await stats(srv)
    # Calls: create, the retrieve of the refused results(), two retrieves, results (retrieve + GET).
    assert st["batches"] == {
        "calls": 6,
        "max_calls_60s": 6,
        "created": 1,
        "requests": 30,
        "succeeded": 30,
        "errored": 0,
        "expired": 0,
        "canceled": 0,
        "duplicate_requests": 0,
    }
    haiku = st["models"][HAIKU]
    assert haiku["requests"] == 1 and haiku["batch"]["requests"] == 30
    assert haiku["batch"]["output_tokens"] == sum(r.result.message.usage.output_tokens for r in got)
    await c.close()


async def test_ends_on_its_own_after_real_latency(start: StartFn) -> None:
    srv = await start(batch_latency_s=0.2)
    c = client(srv)
    batch = await c.messages.batches.create(requests=reqs(2))

    await asyncio.sleep(0.5)
    # No request in between: the server's own timer ended the batch.
    assert srv.state.stats.to_json()["batches"]["succeeded"] == 2
    assert (await c.messages.batches.retrieve(batch.id)).processing_status == "ended"
    await c.close()


@pytest.mark.parametrize(
    ("items", "needle"),
    [
        ([{"custom_id": "x" * 65, "params": params("a")}], "custom_id"),
        ([{"custom_id": "bad id!", "params": params("a")}], "custom_id"),
        ([{"custom_id": "a", "params": params("a")}, {"custom_id": "a", "params": params("b")}], "duplicate"),
        ([{"custom_id": "a"}], "params"),
        ([], "requests"),
    ],
)
async def test_create_validation_is_synchronous_400(start: StartFn, items: list[Any], needle: str) -> None:
    srv = await start()
    c = client(srv)
    with pytest.raises(anthropic.BadRequestError, match=needle):
        await c.messages.batches.create(requests=items)
    assert (await stats(srv))["batches"]["created"] == 0
    await c.close()


async def test_custom_id_of_64_chars_is_accepted(start: StartFn) -> None:
    srv = await start(batch_latency_s=0.0)
    c = client(srv)
    batch = await c.messages.batches.create(requests=[{"custom_id": "A-_9" * 16, "params": params("a")}])
    assert batch.request_counts.processing == 1
    await c.close()


async def test_too_many_requests_or_bytes_is_413(start: StartFn) -> None:
    srv = await start(batch_max_requests=3, batch_max_bytes=4000)
    c = client(srv)
    with pytest.raises(anthropic.APIStatusError) as e:
        await c.messages.batches.create(requests=reqs(4))
    assert e.value.status_code == 413 and "at most 3" in str(e.value)
    big = [{"custom_id": "big", "params": params("z" * 5000)}]
    with pytest.raises(anthropic.APIStatusError) as e:
        await c.messages.batches.create(requests=big)
    assert e.value.status_code == 413
    assert e.value.body is not None and e.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
    assert (await c.messages.batches.create(requests=reqs(3))).request_counts.processing == 3
    await c.close()


async def test_queue_cap_is_a_429(start: StartFn) -> None:
    srv = await start(batch_latency_s=3600.0, batch_queue_cap=5)
    c = client(srv)
    await c.messages.batches.create(requests=reqs(3))
    with pytest.raises(anthropic.RateLimitError):
        await c.messages.batches.create(requests=reqs(3, "s"))
    await c.messages.batches.create(requests=reqs(2, "t"))
    await c.close()


async def test_invalid_params_come_back_as_errored_results(start: StartFn) -> None:
    srv = await start(batch_latency_s=0.0)
    c = client(srv)
    items = [
        {"custom_id": "ok", "params": params("fine")},
        {"custom_id": "nomax", "params": {"model": HAIKU, "messages": [{"role": "user", "content": "x"}]}},
        {"custom_id": "model", "params": params("x", model="gpt-4")},
        {"custom_id": "big", "params": params("x", max_tokens=10**6)},
    ]
    batch = await c.messages.batches.create(requests=items)
    got = {r.custom_id: r.result for r in await results(c, batch.id)}
    assert got["ok"].type == "succeeded"
    for cid, needle in (("nomax", "max_tokens"), ("model", "gpt-4"), ("big", "max_tokens")):
        res = got[cid]
        assert res.type == "errored", cid
        assert res.error.error.type == "invalid_request_error" and needle in res.error.error.message
    counts = (await c.messages.batches.retrieve(batch.id)).request_counts
    assert (counts.succeeded, counts.errored) == (1, 3)
    await c.close()


async def test_fault_spec_draws_expired_and_errored(start: StartFn) -> None:
    plan = FaultPlan.parse("batch_expired=0.3,batch_errored=0.3,429=1.0")
    srv = await start(batch_latency_s=0.0, faults=plan, seed=3)
    c = client(srv)
    batch = await c.messages.batches.create(requests=reqs(200))
    got = [r.result for r in await results(c, batch.id)]
    kinds = {k: sum(r.type == k for r in got) for k in ("succeeded", "errored", "expired")}
    assert 30 < kinds["expired"] < 90 and 30 < kinds["errored"] < 90 and kinds["succeeded"] > 50
    assert all(r.error.error.type == "api_error" for r in got if r.type == "errored")
    st = (await stats(srv))["batches"]
    assert (st["succeeded"], st["errored"], st["expired"]) == (
        kinds["succeeded"],
        kinds["errored"],
        kinds["expired"],
    )
    # Realtime 429s are not drawn inside a batch, and batch kinds never hit realtime calls.
    with pytest.raises(anthropic.RateLimitError):
        await c.messages.create(**params("realtime"))
    await c.close()


def test_batch_fault_kinds_parse_and_validate() -> None:
    plan = FaultPlan.parse("batch_expired=0.1,haiku:batch_errored=0.5")
    assert plan.for_model(HAIKU) == {"batch_expired": 0.1, "batch_errored": 0.5}
    with pytest.raises(ValueError, match="batch_expired"):
        FaultPlan.parse("batch_expired=2")


async def test_markers_force_outcomes(start: StartFn) -> None:
    srv = await start(batch_latency_s=0.0)
    c = client(srv)
    items = [
        {"custom_id": "exp", "params": params("[[mock:batch-expired]] a")},
        {"custom_id": "err", "params": params("[[mock:batch-errored]] b")},
        {"custom_id": "bad", "params": params("[[mock:fault-400]] c")},
        {"custom_id": "over", "params": params("[[mock:fault-529]] d")},
    ]
    batch = await c.messages.batches.create(requests=items)
    got = {r.custom_id: r.result for r in await results(c, batch.id)}
    assert got["exp"].type == "expired"
    assert got["err"].type == "errored" and got["err"].error.error.type == "api_error"
    assert got["bad"].type == "errored" and got["bad"].error.error.type == "invalid_request_error"
    assert got["over"].type == "errored" and got["over"].error.error.type == "overloaded_error"
    await c.close()


async def test_cancel_keeps_processed_results_and_cancels_the_rest(start: StartFn) -> None:
    clock = FakeClock()
    srv = await start(clock=clock, batch_latency_s=100.0)
    c = client(srv)
    batch = await c.messages.batches.create(requests=reqs(10))
    clock.now += 50.0
    canceling = await c.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    ended = await c.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (5, 5)
    got = {r.custom_id: r.result.type for r in await results(c, batch.id)}
    assert got == {f"r{i}": ("succeeded" if i < 5 else "canceled") for i in range(10)}
    # Cancelling an ended batch changes nothing.
    again = await c.messages.batches.cancel(batch.id)
    assert again.processing_status == "ended" and again.request_counts.canceled == 5
    assert (await stats(srv))["batches"]["canceled"] == 5
    await c.close()


async def test_list_newest_first_with_pagination_and_delete(start: StartFn) -> None:
    srv = await start(batch_latency_s=3600.0)
    c = client(srv)
    made = [(await c.messages.batches.create(requests=reqs(1, f"b{i}"))).id for i in range(5)]
    page = await c.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == [made[4], made[3]] and page.has_more
    assert [b.id async for b in c.messages.batches.list(limit=2)] == made[::-1]
    older = await c.messages.batches.list(after_id=made[3], limit=10)
    assert [b.id for b in older.data] == [made[2], made[1], made[0]] and not older.has_more
    newer = await c.messages.batches.list(before_id=made[1], limit=2)
    assert [b.id for b in newer.data] == [made[3], made[2]] and newer.has_more
    with pytest.raises(anthropic.BadRequestError, match="limit"):
        await c.messages.batches.list(limit=0)
    with pytest.raises(anthropic.NotFoundError):
        await c.messages.batches.retrieve("msgbatch_nope")
    with pytest.raises(anthropic.BadRequestError, match="processing"):
        await c.messages.batches.delete(made[0])
    await c.messages.batches.cancel(made[0])
    assert (await c.messages.batches.retrieve(made[0])).processing_status == "ended"
    await c.messages.batches.delete(made[0])
    assert [b.id async for b in c.messages.batches.list()] == made[:0:-1]
    await c.close()


async def test_duplicate_requests_count_billed_repeats_only(start: StartFn) -> None:
    srv = await start(batch_latency_s=0.0)
    c = client(srv)
    await c.messages.batches.create(requests=reqs(3))
    await c.messages.batches.create(requests=reqs(3, "other"))  # same params, other ids: not duplicates
    expired = [{"custom_id": "x", "params": params("[[mock:batch-expired]] y")}]
    await c.messages.batches.create(requests=expired)
    await c.messages.batches.create(requests=expired)  # never billed, so never a duplicate
    assert (await stats(srv))["batches"]["duplicate_requests"] == 0
    await c.messages.batches.create(requests=reqs(2))  # r0, r1 again with the same params
    st = (await stats(srv))["batches"]
    assert st["duplicate_requests"] == 2 and st["requests"] == 10
    await c.close()


async def test_prompt_cache_is_shared_inside_and_across_batches(start: StartFn) -> None:
    srv = await start(batch_latency_s=0.0)
    c = client(srv)
    doc = {"type": "text", "text": "d" * 4096 * 4, "cache_control": {"type": "ephemeral", "ttl": "1h"}}

    def item(i: int) -> dict[str, Any]:
        content = [doc, {"type": "text", "text": f"question {i}"}]
        return {"custom_id": f"q{i}", "params": params("", messages=[{"role": "user", "content": content}])}

    batch = await c.messages.batches.create(requests=[item(i) for i in range(3)])
    usage = [r.result.message.usage for r in await results(c, batch.id)]
    assert sorted(u.cache_creation_input_tokens for u in usage) == [0, 0, 4096]
    assert sorted(u.cache_read_input_tokens for u in usage) == [0, 4096, 4096]
    assert sum(u.cache_creation.ephemeral_1h_input_tokens for u in usage if u.cache_creation) == 4096
    await c.close()


def test_cli_flag_sets_batch_latency() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(["--batch-latency-s", "7.5"])).batch_latency_s == 7.5
    assert config_from_args(parser.parse_args([])).batch_latency_s == MockConfig().batch_latency_s


async def test_realtime_call_reports_its_service_tier(start: StartFn) -> None:
    from worker.pipeline.call import call

    srv = await start()
    c = client(srv)
    res = await call(c, params("hello"), job_id="j1")
    assert res.service_tier == "standard"
    await c.close()
