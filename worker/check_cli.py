"""``routeq check ...``: score answers offline (``check score``); calibrate thresholds from shadow labels.

``worker/cli.py`` calls :func:`add_check_commands` with its argparse subparsers. Every leaf sets
``func(args) -> int`` (the process exit code).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.contract import Document, OutputFormat, TaskType
from jobs.sources import explain
from worker.policy.answer_checks import score_answer


class CheckInput(BaseModel):
    """One line of ``check score`` input."""

    model_config = ConfigDict(extra="forbid")
    task: TaskType
    prompt: str
    answer: str | None
    documents: tuple[Document, ...] = ()
    output: OutputFormat = Field(default_factory=OutputFormat)
    stop_reason: str | None = None


def add_check_commands(subparsers: Any) -> None:
    check = subparsers.add_parser("check", help="answer checks: score answers, calibrate thresholds")
    sub = check.add_subparsers(dest="check_command", required=True)
    p = sub.add_parser("score", help='JSONL {"task","prompt","answer"} on stdin -> {"score","reasons"} lines')
    p.set_defaults(func=cmd_score)


def score_lines(lines: TextIO, out: TextIO, err: TextIO) -> int:
    """Score each line. A bad line gets a one-line error naming it on ``err`` and a null score on ``out``
    (so output lines stay aligned with input lines); scoring carries on."""
    bad = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        problem = None
        try:
            item = CheckInput.model_validate(orjson.loads(line))
        except orjson.JSONDecodeError as e:
            problem = f"line {n}: not JSON ({e})"
        except ValidationError as e:
            problem = f"line {n}: {explain(e)}"
        if problem is not None:
            err.write(f"routeq check score: {problem}\n")
            out.write(orjson.dumps({"score": None, "reasons": [], "error": problem}).decode() + "\n")
            bad += 1
            continue
        s = score_answer(
            item.task.value,
            item.prompt,
            item.answer,
            documents=[d.text for d in item.documents],
            output=item.output,
            stop_reason=item.stop_reason,
        )
        out.write(orjson.dumps(s.as_dict()).decode() + "\n")
    return 1 if bad else 0


def cmd_score(args: argparse.Namespace) -> int:
    return score_lines(sys.stdin, sys.stdout, sys.stderr)
