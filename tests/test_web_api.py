"""The UI's JSON API against a real Redis, real worker processes and the stand-in API: its numbers are
`routeq report`'s, nothing leaves without the token, POSTs need CSRF, SSE pushes one shared snapshot."""

from __future__ import annotations

import asyncio
import subprocess
import time
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest

from jobs.connections import connect
from jobs.contract import scoped_id
from jobs.reports import batch_report, batch_status
from jobs.results import JobResult
from jobs.settings import Settings
from jobs.tiers import TIER_ORDER, Tier
from tests.helpers import Fleet, wait_batch, worker_env
from tests.web_fixtures import FAULTS, SECRET_PROMPT, TOKEN, enqueue, ui_server
from worker.sandbox.embedded import routeq_cmd, start_mock_api, start_workers

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _get(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any, bytes]:
    async with session.get(url, **kw) as r:
        body = await r.read()
        return r.status, (orjson.loads(body) if r.content_type == "application/json" else None), body


async def test_api_numbers_match_report(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    with Fleet(redis_url, workers=2, api_args=FAULTS):
        await enqueue(redis, s, "web-a")
        await wait_batch(s, redis, "web-a", timeout=120)
    rep = await batch_report(redis, s.keys, "web-a")
    st = await batch_status(redis, s.keys, "web-a")
    ids = [m.decode() for m in await redis.smembers(s.keys.batch_jobs("web-a"))]
    results = [JobResult.model_validate_json(await redis.get(s.keys.result(j))) for j in ids]
    async with ui_server(redis, s) as ui, aiohttp.ClientSession(headers=AUTH) as http:
        code, ov, _ = await _get(http, f"{ui.url}/api/overview")
        assert code == 200
        code, bl, _ = await _get(http, f"{ui.url}/api/batches")
        code_d, detail, raw_detail = await _get(http, f"{ui.url}/api/batches/web-a")
        code_j, jobs, raw_jobs = await _get(http, f"{ui.url}/api/batches/web-a/jobs?count=200")
        code_404, _, _ = await _get(http, f"{ui.url}/api/batches/nope")
    await redis.aclose()
    assert (code, code_d, code_j, code_404) == (200, 200, 200, 404)
    # detail: the very report `routeq report --json` prints
    assert detail["report"] == rep
    assert detail["tenant"] == "acme"
    # list row and overview: same counts and money as the report and status
    [row] = bl["batches"]
    for k in ("enqueued", "done", "failed", "dead", "pending"):
        assert row[k] == st[k], k
    assert (row["cost_usd"], row["baseline_cost_usd"], row["savings_pct"]) == (
        rep["cost_usd"],
        rep["baseline_cost_usd"],
        rep["savings_pct"],
    )
    assert row["dead"] == 2 and row["pending"] == 0 and row["eta_s"] == 0.0
    assert ov["cost_pusd"] == rep["cost_pusd"] and ov["baseline_pusd"] == rep["baseline_pusd"]
    assert ov["levers"]["routing_usd"] == rep["routing_savings_usd"]
    assert ov["levers"]["caching_usd"] == rep["cache_savings_usd"]
    assert ov["levers"]["batch_discount_usd"] is None
    for t, trow in rep["tiers"].items():
        assert ov["tiers"][t]["cost_usd"] == trow["cost_usd"]
        assert ov["tiers"][t]["jobs"] == trow["jobs"]
    # 429/529 counters and escalations, against the attempts each result carries
    attempts = [a for r in results for a in r.attempts]
    for t in TIER_ORDER:
        mine = [a for a in attempts if a.tier == t]
        assert ov["tiers"][t.value]["http_429"] == sum(a.error_type == "rate_limit" for a in mine)
        assert ov["tiers"][t.value]["http_529"] == sum(a.error_type == "overloaded" for a in mine)
    assert sum(ov["tiers"][t.value]["http_529"] for t in TIER_ORDER) > 0, "the stand-in injected 529s"
    esc_expected: dict[tuple[str, str], int] = {}
    for r in results:
        for prev, cur in zip(r.attempts, r.attempts[1:], strict=False):
            if cur.tier.rank > prev.tier.rank:
                k = (prev.tier.value, prev.error_type or prev.status)
                esc_expected[k] = esc_expected.get(k, 0) + 1
    assert {(e["from_tier"], e["reason"]): e["jobs"] for e in detail["escalations"]} == esc_expected
    # per-minute series add up to the per-tier totals
    for t, points in detail["series"].items():
        assert sum(p[2] for p in points) == rep["tiers"][t]["jobs"]
        assert sum(p[1] for p in points) == pytest.approx(rep["tiers"][t]["cost_usd"], abs=1e-9)
    # dead letters listed with their cause; no prompt text anywhere without ui_show_content
    assert sorted(d["id"] for d in detail["dead"]) == ["dead-0", "dead-1"]  # the caller's ids
    assert {d["error_type"] for d in detail["dead"]} == {"bad_request"}
    assert SECRET_PROMPT.encode() not in raw_detail and SECRET_PROMPT.encode() not in raw_jobs
    # the jobs page covers the batch, with route reasons and costs
    by_id = {j["job_id"]: j for j in jobs["jobs"]}
    assert len(by_id) == st["enqueued"] and jobs["next_cursor"] is None
    for r in results:
        assert by_id[r.job_id]["cost_usd"] == pytest.approx(r.cost.total_pusd / 1e12, abs=1e-12)
        assert by_id[r.job_id]["tier"] == (r.tier.value if r.tier else None)
        assert "output" not in by_id[r.job_id]


async def test_series_fields_stay_off_the_tenant_aggregate(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    with Fleet(redis_url, workers=1):
        await enqueue(redis, s, "web-t", n=10, dead=0)
        await wait_batch(s, redis, "web-t", timeout=90)
    batch_fields = [f.decode() for f in await redis.hkeys(s.keys.batch_agg("web-t"))]
    tenant_fields = [f.decode() for f in await redis.hkeys(s.keys.tenant_agg("acme"))]
    await redis.aclose()
    assert any(f.startswith("@m:") for f in batch_fields)
    assert not any(f.startswith("@") for f in tenant_fields)
    assert "cost_pusd" in tenant_fields


async def test_no_token_no_data_and_cookie_flow(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    await enqueue(redis, s, "web-secret-batch", n=3, dead=0)  # no workers: queued, listed
    jar = aiohttp.CookieJar(
        unsafe=True
    )  # the server is an IP address, whose cookies aiohttp drops by default
    async with ui_server(redis, s) as ui, aiohttp.ClientSession(cookie_jar=jar) as http:
        for path in (
            "/",
            "/static/app.js",
            "/api/session",
            "/api/overview",
            "/api/batches",
            "/api/batches/web-secret-batch",
            "/api/batches/web-secret-batch/jobs",
            "/api/events",
        ):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": "routeq_ui=wrong"}):
                code, _, body = await _get(http, ui.url + path, headers=headers)
                assert code == 401, (path, headers)
                assert b"web-secret-batch" not in body and TOKEN.encode() not in body
        code, _, _ = await _get(http, f"{ui.url}/api/batches?token=wrong")
        assert code == 401
        # ?token= once: a redirect that drops it, and an HttpOnly SameSite=Strict cookie
        async with http.get(f"{ui.url}/?token={TOKEN}", allow_redirects=False) as r:
            assert r.status == 303
            assert "token" not in r.headers["Location"]
            cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        code, bl, _ = await _get(http, f"{ui.url}/api/batches")  # the jar now carries the cookie
        assert code == 200 and bl["batches"][0]["batch"] == "web-secret-batch"
    await redis.aclose()


async def test_retry_needs_csrf_and_requeues_a_dead_letter(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    with Fleet(redis_url, workers=1):
        await enqueue(redis, s, "web-r", n=4, dead=2)
        await wait_batch(s, redis, "web-r", timeout=90)
        before = await batch_report(redis, s.keys, "web-r")
        dead0 = scoped_id("web-r", "dead-0")  # routeq's own id of the caller's "dead-0"
        async with ui_server(redis, s) as ui, aiohttp.ClientSession(headers=AUTH) as http:
            url = f"{ui.url}/api/batches/web-r/retry"
            for headers in ({}, {"X-CSRF-Token": "nope"}, {"X-CSRF-Token": ui.csrf, "Origin": "http://evil"}):
                async with http.post(url, json={"job_id": dead0}, headers=headers) as r:
                    assert r.status == 403, headers
            assert await redis.hexists(s.keys.batch_dead("web-r"), dead0)
            async with http.post(url, json={"job_id": dead0}, headers={"X-CSRF-Token": ui.csrf}) as r:
                assert r.status == 200 and (await r.json())["requeued"] == 1
            async with http.post(url, json={"job_id": "not-dead"}, headers={"X-CSRF-Token": ui.csrf}) as r:
                assert (await r.json())["requeued"] == 0
            async with http.post(url, data=b"{", headers={"X-CSRF-Token": ui.csrf}) as r:
                assert r.status == 400
        # it ran again (and failed again the same way): counted once, not twice
        deadline = time.monotonic() + 60
        while not await redis.hexists(s.keys.batch_dead("web-r"), dead0):
            assert time.monotonic() < deadline, "retried job never came back"
            await asyncio.sleep(0.1)
        after = await batch_report(redis, s.keys, "web-r")
    await redis.aclose()
    assert (after["jobs"], after["failed"], after["done"]) == (
        before["jobs"],
        before["failed"],
        before["done"],
    )


async def _first_events(url: str, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(headers=AUTH) as http, http.get(url) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        event = None
        async for line in r.content:
            text = line.decode().rstrip("\r\n")
            if text.startswith("event:"):
                event = text.split(":", 1)[1].strip()
            elif text.startswith("data:") and event == "snapshot":
                out.append(orjson.loads(text.split(":", 1)[1]))
                if len(out) >= n:
                    return out
    return out


async def test_sse_one_snapshot_for_all_clients(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    await enqueue(redis, s, "web-sse", n=5, dead=0)
    async with ui_server(redis, s, tick_s=0.5) as ui:
        start_builds = ui.hub.builds
        t0 = time.monotonic()
        clients = await asyncio.wait_for(
            asyncio.gather(*(_first_events(f"{ui.url}/api/events", 4) for _ in range(5))), 30
        )
        elapsed = time.monotonic() - t0
        builds = ui.hub.builds - start_builds
    await redis.aclose()
    for events in clients:
        assert len(events) == 4
        assert events[-1]["batches"][0]["batch"] == "web-sse"
        assert events[-1]["overview"]["intake_depth"] == 5
    # five clients, yet Redis is read once per tick: not once per client per tick
    assert builds <= elapsed / 0.5 + 2, (builds, elapsed)


async def test_show_content_opt_in(redis_url: str) -> None:
    s = Settings(redis_url=redis_url, ui_show_content=True, jaeger_url="http://jaeger.local:16686")
    redis = await connect(s)
    with Fleet(redis_url, workers=1):
        await enqueue(redis, s, "web-c", n=2, dead=1)
        await wait_batch(s, redis, "web-c", timeout=90)
    async with ui_server(redis, s) as ui, aiohttp.ClientSession(headers=AUTH) as http:
        _, detail, _ = await _get(http, f"{ui.url}/api/batches/web-c")
        _, jobs, _ = await _get(http, f"{ui.url}/api/batches/web-c/jobs")
    await redis.aclose()
    assert SECRET_PROMPT in detail["dead"][0]["prompt"]
    done = [j for j in jobs["jobs"] if j["status"] == "done"]
    assert done and all("output" in j for j in done)
    assert all(j["trace_url"].startswith("http://jaeger.local:16686/search?") for j in done)


async def test_worker_serves_the_ui(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    api_url, api = start_mock_api()
    env = worker_env(redis_url, api_url, ROUTEQ_UI_TOKEN=TOKEN)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    [w] = start_workers(1, env, "--ui-port", str(port))
    try:
        await enqueue(redis, s, "web-w", n=5, dead=0)
        await wait_batch(s, redis, "web-w", timeout=90)
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    code, bl, _ = await _get(http, f"http://127.0.0.1:{port}/api/batches", headers=AUTH)
                    break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            assert code == 200 and bl["batches"][0]["done"] == 5
            code, _, _ = await _get(http, f"http://127.0.0.1:{port}/api/batches")
            assert code == 401
    finally:
        w.stop()
        api.stop()
        await redis.aclose()
    # without a token the worker refuses --ui-port with one clear line
    env.pop("ROUTEQ_UI_TOKEN")
    p = subprocess.run(
        routeq_cmd("worker", "--ui-port", "1"), env=env, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2 and "ROUTEQ_UI_TOKEN" in p.stderr and "Traceback" not in p.stderr


def test_ui_command_refuses_unsafe_auth(redis_url: str) -> None:
    env = worker_env(redis_url, "http://127.0.0.1:1")
    for args, needle in (((), "ROUTEQ_UI_TOKEN"), (("--host", "0.0.0.0", "--no-auth"), "loopback")):
        p = subprocess.run(routeq_cmd("ui", *args), env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, p.stderr
        assert needle in p.stderr and "Traceback" not in p.stderr


def test_token_never_in_the_ui_output(redis_url: str) -> None:
    """`routeq -v ui` with requests carrying the token in the query and the header: it logs neither."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = worker_env(redis_url, "http://127.0.0.1:1", ROUTEQ_UI_TOKEN=TOKEN)
    proc = subprocess.Popen(
        routeq_cmd("-v", "ui", "--port", str(port)), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    import httpx2

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx2.get(f"{url}/api/session", timeout=1)
                break
            except httpx2.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        assert httpx2.get(f"{url}/?token={TOKEN}", follow_redirects=False).status_code == 303
        assert httpx2.get(f"{url}/api/overview?token={TOKEN}").status_code == 200
        assert httpx2.get(f"{url}/api/batches", headers=AUTH).status_code == 200
        assert httpx2.get(f"{url}/api/batches?token=wrong-{TOKEN}").status_code == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert b"routeq ui on" in out
    assert TOKEN.encode() not in out


async def test_set_limit_needs_csrf_and_writes_the_override(redis_url: str) -> None:
    from worker.fleet.limit_config import limits_detail

    async def get_limits(redis: Any, keys: Any, s: Settings) -> dict[Tier, Any]:
        detail = await limits_detail(redis, keys, s)
        return {t: SimpleNamespace(**{k: v.value for k, v in per.items()}) for t, per in detail.items()}

    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    async with ui_server(redis, s) as ui, aiohttp.ClientSession(headers=AUTH) as http:
        url = f"{ui.url}/api/limits/opus"
        async with http.post(url, json={"concurrency": 2}) as r:
            assert r.status == 403
        assert (await get_limits(redis, s.keys, s))[Tier.opus].concurrency == 4
        csrf = {"X-CSRF-Token": ui.csrf}
        for body, status in (({"concurrency": 0}, 400), ({"bogus": 1}, 400), ({}, 400)):
            async with http.post(url, json=body, headers=csrf) as r:
                assert r.status == status, body
        async with http.post(f"{ui.url}/api/limits/gpt", json={"concurrency": 2}, headers=csrf) as r:
            assert r.status == 404
        async with http.post(url, json={"concurrency": 2, "rpm": 100}, headers=csrf) as r:
            assert r.status == 200
        limits = (await get_limits(redis, s.keys, s))[Tier.opus]
        await asyncio.sleep(0.6)  # past the test server's tick
        async with http.get(f"{ui.url}/api/overview") as r:
            ov = await r.json()
    await redis.aclose()
    assert (limits.concurrency, limits.rpm) == (2, 100)
    assert ov["tiers"]["opus"]["limit"] == 2
