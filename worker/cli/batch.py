"""``routeq enqueue``, ``status``, ``results``, ``report``, ``dead``, ``retry``: a batch in and out."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from jobs.contract import TaskType
from jobs.settings import Settings
from worker.cli.errors import CliError
from worker.cli.interrupt import StopReading, resume_command


# --- enqueue ----------------------------------------------------------------------------------------
def _tags(pairs: list[str]) -> dict[str, Any]:
    tags: dict[str, Any] = {"labels": {}}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise SystemExit(f"routeq enqueue: --tag expects k=v, got {p!r}")
        if k in ("tenant", "batch"):
            tags[k] = v
        else:
            tags["labels"][k] = v
    return tags


class Progress:
    """A plain progress bar on stderr for large inputs (no dependency, no output when piped)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.on = total >= 1000 and sys.stderr.isatty()

    def __call__(self, seen: int) -> None:
        if self.on:
            frac = min(1.0, seen / max(1, self.total))
            print(
                f"\renqueue [{'#' * int(40 * frac):<40}] {seen}/{self.total}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.on:
            print(file=sys.stderr)


def _enqueue_batch(args: argparse.Namespace, tags: dict[str, Any]) -> str | None:
    """The one batch the user asked for with --batch and/or --tag batch= (ValueError if they differ or
    a batch or tenant name breaks the rule)."""
    from jobs.contract import check_name

    given = {v for v in (args.batch, tags.get("batch")) if v is not None}
    if len(given) > 1:
        raise ValueError(f"--batch {args.batch!r} and --tag batch={tags['batch']!r} differ")
    for kind in ("batch", "tenant"):
        value = args.batch if kind == "batch" and args.batch is not None else tags.get(kind)
        if value is not None:
            check_name(kind, value)
    return next(iter(given), None)


def _enqueue_options(args: argparse.Namespace) -> list[str]:
    """The enqueue's own options (all but --batch), to repeat in a resume command."""
    opts: list[str] = []
    for flag, value in (("--task", args.task), ("--prompt", args.prompt), ("--system", args.system)):
        if value is not None and (flag != "--task" or value != "summarize" or Path(args.path).is_dir()):
            opts += [flag, value]
    for flag, value in (("--mode", args.mode), ("--deadline", args.deadline)):
        if value is not None:
            opts += [flag, value]
    for tag in args.tag:
        opts += ["--tag", tag]
    return opts


async def cmd_enqueue(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
    from jobs import sources, telemetry
    from jobs.producer import BatchRefused, Producer

    path = Path(args.path)
    if not path.exists():
        print(f"routeq enqueue: {path}: no such file or folder", file=sys.stderr)
        return 2
    tags = _tags(args.tag)
    try:
        batch = _enqueue_batch(args, tags)
    except ValueError as e:
        print(f"routeq enqueue: {e}", file=sys.stderr)
        return 2
    try:
        source = sources.open_input(
            path,
            task=TaskType(args.task) if args.task else None,
            prompt=args.prompt,
            system=args.system,
            tags=tags,
            pdf_mode=settings.pdf_mode,
        )
    except sources.InputError as e:
        print(f"routeq enqueue: {e}", file=sys.stderr)
        return 1
    items: Iterator[Any] = source.items
    if args.mode or args.deadline:
        from jobs.schedule import with_schedule

        items = with_schedule(items, args.mode, args.deadline)
    progress = Progress(source.total or 0)
    telemetry.setup_tracing("routeq-producer")  # no-op unless OTEL_* asks for an exporter
    batch_seen: list[str] = []

    def announce(batch: str) -> None:
        batch_seen.append(batch)
        print(f"enqueueing into batch {batch}", file=sys.stderr, flush=True)

    try:
        with StopReading() as stop:
            res = await Producer(redis, settings).enqueue(
                stop.items(items),
                batch=batch,
                tenant=tags.get("tenant"),
                on_progress=progress,
                on_batch=announce,
            )
    except BatchRefused as e:
        print(f"routeq enqueue: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        progress.close()
        if batch_seen:
            print(
                f"interrupted: some jobs may be in batch {batch_seen[0]}; resume with: "
                f"{resume_command(args.path, _enqueue_options(args), batch_seen[0])}",
                file=sys.stderr,
            )
        return 130
    finally:
        telemetry.shutdown_tracing()  # flush the producer's spans before the process exits
    progress.close()
    if stop.interrupted:
        print(
            f"interrupted: enqueued {res.enqueued} jobs into batch {res.batch} "
            f"(duplicates {res.duplicates}, rejected {len(res.rejected)}); resume with: "
            f"{resume_command(args.path, _enqueue_options(args), res.batch)}",
            file=sys.stderr,
        )
        return 130
    for r in res.rejected:
        print(r, file=sys.stderr)
    if source.kind == "folder":
        # Never silently: files that are not jobs are counted always, and listed when asked.
        verbose = getattr(args, "verbose", False)
        for skipped in source.skipped if verbose else ():
            print(skipped, file=sys.stderr)
        if source.skipped:
            hint = "" if verbose else " (--verbose lists them)"
            print(f"skipped {len(source.skipped)} file(s) of other types or hidden{hint}", file=sys.stderr)
    if res.read == 0:
        print(f"routeq enqueue: {path}: no jobs in it, nothing enqueued", file=sys.stderr)
        return 1
    if args.json:
        extra = {"skipped": len(source.skipped)} if source.kind == "folder" else {}
        print(orjson.dumps({**res.summary(), **extra}).decode())
    elif res.batch:
        print(res.batch)
    if not args.json:
        print(
            f"enqueued {res.enqueued}, duplicates {res.duplicates}, rejected {len(res.rejected)}",
            file=sys.stderr,
        )
    return 1 if res.rejected else 0


def _deadline_arg(text: str) -> str:
    from jobs.schedule import check_deadline

    try:
        return check_deadline(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# --- reading back -----------------------------------------------------------------------------------
def _bar(st: dict[str, Any], width: int = 30) -> str:
    total = max(1, int(st["enqueued"]))
    finished = int(st["done"]) + int(st["failed"]) + int(st.get("canceled", 0))
    filled = int(width * finished / total)
    canceled = f" canceled={st['canceled']}" if st.get("canceled") else ""
    return (
        f"{st['batch']} [{'#' * filled}{'.' * (width - filled)}] {finished}/{st['enqueued']} "
        f"done={st['done']} failed={st['failed']}{canceled} pending={st['pending']}"
    )


async def cmd_status(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
    from jobs.reports import batch_status

    st = await batch_status(redis, settings.keys, args.batch)
    if not st["exists"]:
        raise CliError(f"no batch {args.batch!r}", code=1)
    if args.watch or args.wait:
        live = args.watch and sys.stderr.isatty()
        while st["pending"] > 0:
            if args.watch:
                # On a terminal the bar redraws in place; piped, it is one line per poll.
                print(
                    ("\r" if live else "") + _bar(st), end="" if live else "\n", file=sys.stderr, flush=True
                )
            await asyncio.sleep(args.interval)
            st = await batch_status(redis, settings.keys, args.batch)
        if args.watch:
            print(("\r" if live else "") + _bar(st), file=sys.stderr, flush=True)
    if args.json:
        print(orjson.dumps(st).decode())
    else:
        print(" ".join(f"{k}={v}" for k, v in st.items() if k != "exists"))
    return 0


async def _require_batch(redis: Any, settings: Settings, batch: str) -> None:
    """An unknown batch is the same error, exit 1, in every command that reads one."""
    from jobs.reports import batch_status

    if not (await batch_status(redis, settings.keys, batch))["exists"]:
        raise CliError(f"no batch {batch!r}", code=1)


def _out_path(raw: str) -> Path:
    out = Path(raw)
    if out.is_dir():
        raise CliError(f"--out {raw}: is a folder; give a file name")
    if not out.parent.is_dir():
        raise CliError(f"--out {raw}: folder {out.parent} does not exist")
    return out


async def cmd_results(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
    from jobs.reports import iter_results

    out = _out_path(args.out) if args.out else None  # checked before Redis is asked anything
    await _require_batch(redis, settings, args.batch)
    # A new file beside the target, renamed over it only when complete: an existing file is never
    # truncated by a failed or interrupted run.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp") if out else None
    sink = open(tmp, "wb") if tmp else sys.stdout.buffer  # noqa: SIM115
    n = pending = 0
    try:
        async for row in iter_results(redis, settings.keys, args.batch):
            if row.get("status") == "pending":
                pending += 1
                continue
            sink.write(orjson.dumps(row) + b"\n")
            n += 1
        if tmp and out:
            sink.close()
            os.replace(tmp, out)
    finally:
        if tmp:
            sink.close()
            tmp.unlink(missing_ok=True)
    if out:
        print(f"wrote {n} results to {out}", file=sys.stderr)
    if pending:
        print(f"{pending} jobs of batch {args.batch} still pending (not written)", file=sys.stderr)
    return 0


async def cmd_report(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
    from jobs.reports import batch_report, render_report

    await _require_batch(redis, settings, args.batch)
    rep = await batch_report(redis, settings.keys, args.batch)
    print(orjson.dumps(rep).decode() if args.json else render_report(rep))
    return 0


async def cmd_dead(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
    from jobs.reports import dead_letters

    await _require_batch(redis, settings, args.batch)
    dead = await dead_letters(redis, settings.keys, args.batch)
    if args.json:
        print(orjson.dumps(dead).decode())
    else:
        for job_id, cause in dead.items():
            print(f"{job_id}\t{cause.get('error_type')}\t{cause.get('error')}")
    return 0


async def _batches(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
    from worker.batches.listing import list_batches, render

    rows = await list_batches(redis, settings.keys)
    print(orjson.dumps(rows).decode() if args.json else render(rows))
    return 0


async def _cancel(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
    from worker.app import build_runtime
    from worker.batches.cancel import cancel_batch
    from worker.batches.rate import BatchRateLimited

    rt = await build_runtime(settings)
    try:
        got = await cancel_batch(rt, args.batch)
    except BatchRateLimited as e:
        print(f"routeq: batch {args.batch} is canceled, but {e}; run the cancel again", file=sys.stderr)
        return 1
    finally:
        await rt.gate.close()
        await rt.client.close()
        await rt.redis.aclose()
    print(
        f"batch {args.batch}: {got['gathered_canceled']} gathered requests canceled, "
        f"{got['api_batches_canceled']} API batches canceled"
    )
    return 0


async def cmd_retry(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
    from worker.fleet.requeue import retry_batch

    await _require_batch(redis, settings, args.batch)
    n = await retry_batch(redis, settings, args.batch, dead_only=args.dead)
    print(f"re-enqueued {n} jobs of batch {args.batch}")
    return 0


def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {n})")
    return n
