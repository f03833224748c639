"""``routeq check ...``: score answers offline (``check score``); calibrate thresholds from shadow labels.

``worker/cli/`` calls :func:`add_check_commands` with its argparse subparsers. Every leaf sets
``func(args) -> int`` (the process exit code).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.connections import NoRedisConfigured, connect
from jobs.contract import Document, OutputFormat, TaskType
from jobs.settings import Settings
from jobs.sources import explain
from worker.fleet import calibration
from worker.policy.answer_checks import documents, family_of, maths, score_answer
from worker.policy.calibration import MIN_LABELS, Calibration, calibrate

SIGNAL_NAMES: dict[str, tuple[str, ...]] = {
    "maths": maths.SIGNALS,
    "extraction": documents.EXTRACTION_SIGNALS,
    "classification": documents.CLASSIFICATION_SIGNALS,
    "qa": documents.QA_SIGNALS,
}


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
    add_calibrate_command(sub)


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
            documents=[d.text for d in item.documents if d.text is not None],
            output=item.output,
            stop_reason=item.stop_reason,
        )
        out.write(orjson.dumps(s.as_dict()).decode() + "\n")
    return 1 if bad else 0


def cmd_score(args: argparse.Namespace) -> int:
    return score_lines(sys.stdin, sys.stdout, sys.stderr)


async def quality_by_task(redis: Any, settings: Settings) -> dict[str, Any]:
    """The per-task calibration state `routeq quality` shows."""
    return await calibration.quality_by_task(redis, settings.keys, settings.quality_target, MIN_LABELS)


def add_calibrate_command(sub: Any) -> None:
    p = sub.add_parser("calibrate", help="fit signal weights and thresholds per task from shadow labels")
    p.add_argument("--task", choices=[t.value for t in TaskType], default=None)
    p.add_argument("--dry-run", action="store_true", help="print the curve and threshold, store nothing")
    p.add_argument(
        "--split-seed",
        type=int,
        default=None,
        metavar="N",
        help="draw the fit/held-out split of the labels with seed N (default: the stable split)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_calibrate)


def render_calibration(cal: Calibration, target: float) -> str:
    head = f"{cal.task} on {cal.tier}: {cal.labels} labels; {cal.message}"
    if cal.fallback:
        return head
    lines = [head, f"  {'threshold':>10}{'escalated':>11}{'quality':>9}"]
    lines += [f"  {p.threshold:>10.3f}{p.escalated_share:>11.1%}{p.quality:>9.1%}" for p in cal.curve]
    lines.append(
        f"  chosen threshold {cal.threshold:.3f} for quality >= {target:.0%}: held out "
        f"{cal.holdout_quality:.1%} quality, {cal.holdout_escalated:.1%} escalated "
        f"({cal.holdout_labels} labels)"
    )
    return "\n".join(lines)


def cmd_calibrate(args: argparse.Namespace) -> int:
    return asyncio.run(_calibrate(args))


async def _calibrate(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        redis = await connect(settings)
    except NoRedisConfigured as e:
        print(f"routeq: {e}", file=sys.stderr)
        return 2
    try:
        groups = await calibration.load_labels(redis, settings.keys, args.task)
        cals = []
        for (task, tier), labels in sorted(groups.items()):
            family = family_of(task)
            names = SIGNAL_NAMES.get(family or "", ())
            cals.append(
                calibrate(task, tier, labels, names, settings.quality_target, split_seed=args.split_seed)
            )
        if args.task and not cals:
            cals.append(calibrate(args.task, "haiku", [], (), settings.quality_target))
        stored = 0 if args.dry_run else await calibration.store(redis, settings.keys, cals)
    finally:
        await redis.aclose()
    if args.json:
        print(orjson.dumps({"calibrations": [c.as_dict() for c in cals], "stored": stored}).decode())
    else:
        for c in cals:
            print(render_calibration(c, settings.quality_target))
        if not cals:
            print("no shadow labels with check signals yet: using the shipped defaults")
        print("dry run: nothing stored" if args.dry_run else f"stored {stored} calibration(s)")
    return 0
