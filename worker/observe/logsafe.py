"""Logs carry ids, sizes and error kinds, never a job's text (prompt, system, documents, answer).

arq logs each job's arguments (for routeq, the whole job document) when it starts one, and the message
of any exception a job function raises (a validation error quotes its input). ``install`` puts a filter
on arq's logger that keeps those lines but drops what they quote; ``exception_summary`` describes an
exception by its type and where it was raised, without its message, for routeq's own error lines.
"""

from __future__ import annotations

import logging
import os
import traceback
from types import TracebackType

ARQ_LOGGER = "arq.worker"
_START = "%6.2fs → %s(%s)%s"  # arq's "job started" line; its third argument is the job's arguments
_FAILED = "%6.2fs ! %s failed, %s: %s"  # its fourth argument is the exception (message included)


def exception_summary(e: BaseException, tb: TracebackType | None = None) -> str:
    """``ValueError at worker/pipeline/run.py:120 in run <- ...``: the type and the innermost frames."""
    frames = traceback.extract_tb(tb or e.__traceback__)[-3:]
    where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in reversed(frames))
    return f"{type(e).__name__} at {where}" if where else type(e).__name__


class JobTextFilter(logging.Filter):
    """Keeps arq's lines about jobs but not the job documents or exception messages they would quote."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg == _START and isinstance(args, tuple) and len(args) == 4:
            record.args = (args[0], args[1], "…", args[3])
        elif record.msg == _FAILED and isinstance(args, tuple) and len(args) == 4:
            record.args = (args[0], args[1], args[2], "message not logged")
        if record.exc_info and record.exc_info[1] is not None:
            exc, tb = record.exc_info[1], record.exc_info[2]
            record.msg = f"{record.getMessage()} [{exception_summary(exc, tb)}]"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def install() -> None:
    """Filter arq's worker logger (idempotent)."""
    logger = logging.getLogger(ARQ_LOGGER)
    if not any(isinstance(f, JobTextFilter) for f in logger.filters):
        logger.addFilter(JobTextFilter())
