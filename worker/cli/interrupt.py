"""Ctrl-C during a long enqueue: stop reading input, let the chunk in flight land, report exactly.

The first SIGINT only sets a flag: the producer sees the input end, writes what it holds (each chunk is
one atomic script) and returns its true counts, so the user can be told how many jobs reached which
batch and how to resume. A second SIGINT stops at once.
"""

from __future__ import annotations

import shlex
import signal
import threading
from collections.abc import Iterable, Iterator
from types import FrameType, TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class StopReading:
    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None

    def __enter__(self) -> StopReading:
        # Only the main thread may set a handler; elsewhere (the CLI called from a thread) Ctrl-C is not
        # ours to catch.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True

    def items(self, source: Iterable[T]) -> Iterator[T]:
        """``source`` until the first Ctrl-C."""
        for item in source:
            if self.interrupted:
                return
            yield item


def resume_command(path: str, options: list[str], batch: str) -> str:
    """The command that enqueues the rest into the same batch (what is there already is a duplicate)."""
    return shlex.join(["routeq", "enqueue", path, *options, "--batch", batch])
