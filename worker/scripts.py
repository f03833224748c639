"""Lua scripts kept as .lua files, registered lazily on first use (one SHA per Redis client)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


@cache
def source(name: str) -> str:
    return resources.files("worker").joinpath(f"lua/{name}.lua").read_text()


class Scripts:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._loaded: dict[str, AsyncScript] = {}

    def __getitem__(self, name: str) -> AsyncScript:
        s = self._loaded.get(name)
        if s is None:
            s = self._loaded[name] = self._redis.register_script(source(name))
        return s
