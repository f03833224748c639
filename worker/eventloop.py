"""The event loop long-running processes use: uvloop where it is installed, else asyncio's own.

A worker's CPU goes mostly to small socket writes and reads (Redis round trips, one HTTP call a job);
uvloop does that work in C and cut the CPU per job of ``bench/limits.py`` by about a sixth here. Short
CLI commands keep ``asyncio.run``: they make a handful of calls and the choice does not matter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # platforms without a uvloop wheel (e.g. Windows)
        return asyncio.run(main)
    return uvloop.run(main)
