"""Commands packed by hiredis are byte for byte what redis-py packs, and work on a real server."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from jobs.connections import HiredisPacking, connect
from jobs.settings import Settings

ARGS: list[tuple[Any, ...]] = [
    ("SET", "k", "v"),
    ("EVALSHA", "abc", 2, "a", "b", 0.1 + 0.2, -7, 2**70, 1e20, float("inf")),
    ("HSET", b"h", "f\u00e9", memoryview(b"raw")),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", "n"),
    ("SET", "k", ""),
]


class Packer(HiredisPacking, Connection):
    pass


@pytest.mark.parametrize("args", ARGS)
def test_hiredis_packs_what_redis_py_packs(args: tuple[Any, ...]) -> None:
    assert b"".join(Packer().pack_command(*args)) == b"".join(Connection().pack_command(*args))


@pytest.mark.parametrize("bad", [None, True, object()])
def test_arguments_redis_py_refuses_are_refused(bad: Any) -> None:
    with pytest.raises(DataError):
        Packer().pack_command("SET", "k", bad)


@pytest.mark.integration
async def test_a_worker_connection_packs_with_hiredis_against_a_real_server(redis_url: str) -> None:
    pool = await connect(Settings(redis_url=redis_url))
    try:
        assert issubclass(pool.connection_pool.connection_class, HiredisPacking)
        await pool.set("k", 1.5)
        pipe = pool.pipeline(transaction=True)
        pipe.hset("h", mapping={"f\u00e9": "v\u00e9", "n": 3})
        pipe.hgetall("h")
        assert (await pipe.execute())[1] == {"f\u00e9".encode(): "v\u00e9".encode(), b"n": b"3"}
        echo = pool.register_script("return {KEYS[1], ARGV[1], ARGV[2]}")
        assert await echo(keys=["k"], args=[2**70, "x"]) == [b"k", b"1180591620717411303424", b"x"]
        assert await pool.get("k") == b"1.5"
        # every open connection is a hiredis-packing one (the first PING's was replaced)
        conns = pool.connection_pool._available_connections
        assert conns and all(isinstance(c, HiredisPacking) for c in conns)
    finally:
        await pool.aclose()
