"""Plumbing every ``routeq`` subcommand shares: settings, the Redis connection, errors, exit codes."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from jobs.connections import connect
from jobs.settings import Settings

Handler = Callable[[argparse.Namespace], int]


def redis_command(fn: Callable[[Any, Settings, argparse.Namespace], Awaitable[int]]) -> Handler:
    """Run ``fn(redis, settings, args)`` on a connection from the settings; no URL is a clear error."""

    def handler(args: argparse.Namespace) -> int:
        settings = Settings()

        async def go() -> int:
            redis = await connect(settings, fail_fast=True)
            try:
                return await fn(redis, settings, args)
            finally:
                await redis.aclose()

        return asyncio.run(go())

    return handler
