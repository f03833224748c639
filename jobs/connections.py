"""Redis connections that survive a Redis restart: commands retry with backoff while it comes back."""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    RedisError,
    ResponseError,
    TimeoutError,
)
from redis.utils import HIREDIS_AVAILABLE

from jobs.serialization import deserialize, serialize
from jobs.settings import Settings

T = TypeVar("T")

# ~30 s of reconnect attempts (capped exponential backoff) before a command gives up.
RECONNECT_RETRIES = 40
# A command-line client gives up after this many tries (~1.5 s, plus connect timeouts) and says why.
FAST_RETRIES = 3
FAST_CONNECT_TIMEOUT_S = 1
REDIS_SCHEMES = ("redis", "rediss", "unix")


def settings_with_redis() -> Settings | None:
    """The settings, or None after telling the user on stderr that no Redis is configured."""
    settings = Settings()
    if not settings.redis_url:
        print("error: no Redis configured; set REDIS_URL (or ROUTEQ_REDIS_URL)", file=sys.stderr)
        return None
    return settings


class NoRedisConfigured(RuntimeError):
    def __init__(self) -> None:
        super().__init__("no Redis configured: set REDIS_URL (e.g. redis://localhost:6379/0)")


class RedisUnavailable(RuntimeError):
    """Redis cannot be used as configured. The message is one line: where, what was tried, what failed.

    ``retryable`` is False when trying again cannot help (a wrong URL or password)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def redis_target(url: str) -> str:
    """Where a Redis URL points (``host:port`` or the socket path), never its credentials."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path or "?"
    try:
        port = parts.port or 6379
    except ValueError:
        port = "?"  # type: ignore[assignment]
    return f"{parts.hostname or 'localhost'}:{port}"


def check_redis_url(url: str) -> None:
    """A URL of a scheme Redis clients speak; anything else is refused before any connection."""
    scheme = urlsplit(url).scheme
    if scheme not in REDIS_SCHEMES:
        got = f"{scheme}://" if scheme else "no scheme"
        raise RedisUnavailable(
            f"REDIS_URL must start with redis://, rediss:// or unix:// (got {got})", retryable=False
        )


def explain_redis_error(
    url: str, exc: BaseException, tries: int | None = None, spent_s: float = 0
) -> RedisUnavailable:
    """One line for a failure to use Redis at ``url``, naming where and what was tried."""
    where = redis_target(url)
    text = str(exc) or type(exc).__name__
    if isinstance(exc, AuthenticationError) or (
        isinstance(exc, ResponseError)
        and text.upper().startswith(("WRONGPASS", "NOAUTH", "INVALID PASSWORD"))
    ):
        return RedisUnavailable(
            f"Redis at {where} refused the credentials in REDIS_URL ({text})", retryable=False
        )
    tried = f" (tried {tries} times over {spent_s:.1f}s)" if tries else ""
    return RedisUnavailable(f"cannot reach Redis at {where}: {text}{tried}", retryable=True)


def redis_settings(url: str, retries: int = RECONNECT_RETRIES) -> RedisSettings:
    rs = RedisSettings.from_dsn(url)
    rs.conn_retries = 0  # the command retry below covers the first PING too, with backoff
    rs.conn_retry_delay = 1
    rs.retry_on_timeout = True
    rs.retry_on_error = [ConnectionError, TimeoutError, BusyLoadingError]
    # OSError too: redis-py 5.x opens a pool connection outside the command's retry, and its connect()
    # retries only redis' own errors, so a refused connect (Redis restarting) would fail the command at once.
    rs.retry = Retry(
        ExponentialBackoff(cap=1.0, base=0.05),
        retries,
        supported_errors=(ConnectionError, TimeoutError, BusyLoadingError, OSError),  # type: ignore[arg-type]
    )
    return rs


class HiredisPacking:
    """Packs commands with redis-py's hiredis serializer, the one its sync connection uses.

    redis-py 5's asyncio connection packs every argument in Python, about 6% of a busy worker's CPU (its
    scripts take many arguments); hiredis writes the same bytes and refuses the same arguments.
    """

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._serializer.pack(*args)
        return packed


_PACKING_CLASSES: dict[type, type] = {}


class ConcurrentCheckoutPool(ConnectionPool):
    """redis-py's asyncio pool, checking out connections without its lock.

    redis-py 5.3 holds one ``asyncio.Lock`` across the whole checkout, including the connection's
    readiness probe, which awaits a turn of the event loop (redis-py #3692): every command of a busy
    process then queues for that lock, one per loop turn. Here a worker's 64 jobs waited their turn for
    it while holding tier slots, and the fleet's slots turned over at a third of their rate. Taking a free
    connection has no await in it, so on one event loop it needs no lock; the probe runs unlocked, as in
    redis-py's own ``BlockingConnectionPool`` and before 5.3."""

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        connection = self.get_available_connection()  # type: ignore[no-untyped-call]
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection


def check_out_concurrently(client: Redis) -> None:
    """Make ``client``'s pool a :class:`ConcurrentCheckoutPool` (its connections and settings kept)."""
    pool = client.connection_pool
    if type(pool) is ConnectionPool:
        pool.__class__ = ConcurrentCheckoutPool


async def pack_with_hiredis(client: Redis) -> None:
    """Make ``client``'s pool open hiredis-packing connections (no-op without hiredis)."""
    pool = client.connection_pool
    base = pool.connection_class
    if not HIREDIS_AVAILABLE or issubclass(base, HiredisPacking):
        return
    if base not in _PACKING_CLASSES:
        _PACKING_CLASSES[base] = type(base.__name__, (HiredisPacking, base), {})
    pool.connection_class = _PACKING_CLASSES[base]
    # a connection already open (the first PING's) would go on packing in Python
    await pool.disconnect()
    pool.reset()  # type: ignore[no-untyped-call]


def cli_client(url: str) -> Redis:
    """A plain client for a short command: a few quick tries, then the error (see ``explain_redis_error``)."""
    check_redis_url(url)
    retry = Retry(
        ExponentialBackoff(cap=0.5, base=0.1),
        FAST_RETRIES,
        supported_errors=(ConnectionError, TimeoutError, BusyLoadingError, OSError),  # type: ignore[arg-type]
    )
    client: Redis = Redis.from_url(url, socket_connect_timeout=FAST_CONNECT_TIMEOUT_S, retry=retry)
    return client


async def connect(settings: Settings, url: str | None = None, *, fail_fast: bool = False) -> ArqRedis:
    """An arq pool (a ``redis.asyncio.Redis``) with the orjson serializer and reconnect-with-backoff.

    ``fail_fast`` (the CLI): a few tries with a short connect timeout, then ``RedisUnavailable``; every
    failure to connect or authenticate is ``RedisUnavailable`` with one line saying where and why.
    """
    url = url or settings.redis_url
    if not url:
        raise NoRedisConfigured()
    check_redis_url(url)
    retries = FAST_RETRIES if fail_fast else RECONNECT_RETRIES
    rs = redis_settings(url, retries)
    if fail_fast:
        rs.conn_timeout = FAST_CONNECT_TIMEOUT_S
    t0 = time.monotonic()
    try:
        pool = await create_pool(
            rs,
            job_serializer=serialize,
            job_deserializer=deserialize,
            default_queue_name=settings.keys.intake_queue,
        )
        await pack_with_hiredis(pool)
        check_out_concurrently(pool)
        return pool
    except (RedisError, OSError) as e:
        raise explain_redis_error(url, e, retries + 1, time.monotonic() - t0) from None


async def aw(value: Awaitable[T] | T) -> T:
    """redis-py types its async commands as ``Awaitable[T] | T``; this awaits and narrows for mypy."""
    if inspect.isawaitable(value):
        return await value
    return value


def as_text(value: Any) -> str:
    """A Redis reply (bytes, or str on a decoding client) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
