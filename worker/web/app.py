"""The aiohttp application: the page, the JSON API, the SSE stream, the retry action; `routeq ui`.

Routes (all behind ``auth``): ``/`` and ``/static/*``; ``GET /api/session``, ``/api/overview``,
``/api/batches``, ``/api/batches/{id}``, ``/api/batches/{id}/jobs``, ``/api/events`` (SSE);
``POST /api/batches/{id}/retry`` (body ``{"job_id": ...}`` for one dead letter, else all of them),
``POST /api/limits/{tier}`` (body ``{"concurrency": N, "rpm": N, ...}``, as `routeq limits set`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp_sse import sse_response
from redis.asyncio import Redis

from jobs.settings import Settings
from jobs.tiers import TIER_ORDER
from worker.fleet.limit_config import LIMIT_KINDS, set_limits
from worker.fleet.requeue import retry_batch, retry_job
from worker.web import reads
from worker.web.auth import Auth, AuthConfigError, make_auth, middleware
from worker.web.hub import Hub
from worker.web.snapshot import SORT_KEYS, sort_rows

log = logging.getLogger("routeq.web")

STATIC = Path(__file__).resolve().parent / "static"
HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
AUTH: web.AppKey[Auth] = web.AppKey("auth", Auth)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
REDIS: web.AppKey[Redis] = web.AppKey("redis", Redis)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def session(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    return _json(
        {
            "csrf_token": request.app[AUTH].csrf,
            "show_content": s.ui_show_content,
            "jaeger": bool(s.jaeger_url),
            "tick_s": request.app[HUB].tick_s,
        }
    )


async def overview(request: web.Request) -> web.Response:
    snap = await request.app[HUB].snapshot()
    return _json({"ts": snap["ts"], **snap["overview"], "quality": snap["quality"]})


async def batches(request: web.Request) -> web.Response:
    snap = await request.app[HUB].snapshot()
    key = request.query.get("sort", "created_ms")
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        return _error(400, f"order: expected asc or desc, got {order!r}")
    try:
        rows = sort_rows(snap["batches"], key, descending=order == "desc")
        limit = int(request.query.get("limit", "0"))
    except ValueError as e:
        return _error(400, str(e) if key not in SORT_KEYS else "limit: expected an integer")
    return _json({"ts": snap["ts"], "batches": rows[:limit] if limit > 0 else rows})


async def batch_detail(request: web.Request) -> web.Response:
    batch = request.match_info["batch"]
    detail = await reads.read_batch(request.app[REDIS], request.app[SETTINGS], batch)
    if detail is None:
        return _error(404, f"no batch {batch!r}")
    return _json(detail)


async def batch_jobs(request: web.Request) -> web.Response:
    try:
        cursor = int(request.query.get("cursor", "0"))
        count = min(200, max(1, int(request.query.get("count", str(reads.JOBS_PAGE)))))
    except ValueError:
        return _error(400, "cursor and count: expected integers")
    page = await reads.read_jobs(
        request.app[REDIS], request.app[SETTINGS], request.match_info["batch"], cursor, count
    )
    return _json(page)


async def retry(request: web.Request) -> web.Response:
    batch = request.match_info["batch"]
    body: dict[str, Any] = {}
    if request.can_read_body:
        try:
            body = orjson.loads(await request.read()) or {}
        except orjson.JSONDecodeError:
            return _error(400, 'body: expected JSON like {"job_id": "..."} or nothing')
        if not isinstance(body, dict):
            return _error(400, "body: expected a JSON object")
    redis, settings = request.app[REDIS], request.app[SETTINGS]
    job_id = body.get("job_id")
    if job_id is not None:
        if not isinstance(job_id, str):
            return _error(400, "job_id: expected a string")
        n = int(await retry_job(redis, settings, batch, job_id))
    else:
        n = await retry_batch(redis, settings, batch, dead_only=True)
    log.info("ui: re-enqueued %d dead letters of batch %s", n, batch)
    return _json({"batch": batch, "requeued": n})


async def set_limit(request: web.Request) -> web.Response:
    """``POST /api/limits/{tier}`` with ``{"concurrency": N, "rpm": N, ...}``: `routeq limits set`."""
    tier = request.match_info["tier"]
    if tier not in [t.value for t in TIER_ORDER]:
        return _error(404, f"no tier {tier!r}")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(400, 'body: expected JSON like {"concurrency": 8}')
    if not isinstance(body, dict) or not body or set(body) - set(LIMIT_KINDS):
        return _error(400, f"body: an object with some of {', '.join(LIMIT_KINDS)}")
    try:
        written = await set_limits(request.app[REDIS], request.app[SETTINGS].keys, tier, **body)
    except (TypeError, ValueError) as e:
        return _error(400, f"{tier}: {e}")
    log.info("ui: limits of %s set: %s", tier, written)
    return _json({"tier": tier, "set": written})


async def events(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    await hub.snapshot()
    async with sse_response(request) as resp:
        q = hub.subscribe()
        try:
            await resp.send(hub.latest_json.decode(), event="snapshot")
            while resp.is_connected():
                data = await q.get()
                await resp.send(data.decode(), event="snapshot")
        except ConnectionResetError:
            pass  # the client went away between ticks
        finally:
            hub.unsubscribe(q)
    return resp


def make_app(redis: Redis, settings: Settings, auth: Auth, tick_s: float | None = None) -> web.Application:
    app = web.Application(middlewares=[middleware(auth)])
    app[REDIS], app[SETTINGS], app[AUTH] = redis, settings, auth
    app[HUB] = Hub(redis, settings) if tick_s is None else Hub(redis, settings, tick_s)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/api/session", session)
    app.router.add_get("/api/overview", overview)
    app.router.add_get("/api/batches", batches)
    app.router.add_get("/api/batches/{batch}", batch_detail)
    app.router.add_get("/api/batches/{batch}/jobs", batch_jobs)
    app.router.add_post("/api/batches/{batch}/retry", retry)
    app.router.add_post("/api/limits/{tier}", set_limit)
    app.router.add_get("/api/events", events)

    async def close_hub(app: web.Application) -> None:
        await app[HUB].close()

    app.on_shutdown.append(close_hub)
    return app


async def start_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` in the running loop. No access log: it would print ``?token=`` query strings."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def serve(settings: Settings, host: str, port: int, no_auth: bool) -> int:
    from jobs.connections import connect

    auth = make_auth(settings.ui_token, host, no_auth)
    redis = await connect(settings)
    runner = await start_site(make_app(redis, settings, auth), host, port)
    print(f"routeq ui on http://{host}:{port}/" + ("" if auth.token is None else "  (token required)"))
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await redis.aclose()
    return 0


def _ui(args: argparse.Namespace) -> int:
    settings = Settings()
    if not settings.redis_url:
        print("routeq ui: set REDIS_URL (the Redis the workers use)", file=sys.stderr)
        return 2
    try:
        make_auth(settings.ui_token, args.host, args.no_auth)
    except AuthConfigError as e:
        print(f"routeq ui: {e}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(settings, args.host, args.port, args.no_auth))
    return 0


def add_ui_command(sub: Any) -> None:
    u = sub.add_parser("ui", help="serve the web UI: batches, tiers, spend and savings, live")
    u.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    u.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    u.add_argument(
        "--no-auth", action="store_true", help="no token (only with a loopback --host, for one person)"
    )
    u.set_defaults(func=_ui)
