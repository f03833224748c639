"""Redis connections that survive a Redis restart: commands retry with backoff while it comes back."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable
from typing import TypeVar

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from jobs.serialization import deserialize, serialize
from jobs.settings import Settings

T = TypeVar("T")

# ~30 s of reconnect attempts (capped exponential backoff) before a command gives up.
RECONNECT_RETRIES = 40


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


def redis_settings(url: str) -> RedisSettings:
    rs = RedisSettings.from_dsn(url)
    rs.conn_retries = 10
    rs.conn_retry_delay = 1
    rs.retry_on_timeout = True
    rs.retry_on_error = [ConnectionError, TimeoutError, BusyLoadingError]
    # OSError too: redis-py 5.x opens a pool connection outside the command's retry, and its connect()
    # retries only redis' own errors, so a refused connect (Redis restarting) would fail the command at once.
    rs.retry = Retry(
        ExponentialBackoff(cap=1.0, base=0.05),
        RECONNECT_RETRIES,
        supported_errors=(ConnectionError, TimeoutError, BusyLoadingError, OSError),  # type: ignore[arg-type]
    )
    return rs


async def connect(settings: Settings, url: str | None = None) -> ArqRedis:
    """An arq pool (a ``redis.asyncio.Redis``) with the orjson serializer and reconnect-with-backoff."""
    url = url or settings.redis_url
    if not url:
        raise NoRedisConfigured()
    return await create_pool(
        redis_settings(url),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=settings.keys.intake_queue,
    )


async def aw(value: Awaitable[T] | T) -> T:
    """redis-py types its async commands as ``Awaitable[T] | T``; this awaits and narrows for mypy."""
    if inspect.isawaitable(value):
        return await value
    return value
