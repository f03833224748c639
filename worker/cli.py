"""The `routeq` command. Each subcommand is a thin shell over a module that does the work."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from jobs.connections import connect
from jobs.contract import TaskType
from jobs.settings import Settings
from worker import eventloop
from worker.cli_errors import CliError, run_command
from worker.interrupt import StopReading, resume_command

Handler = Callable[[argparse.Namespace], int]


def _redis_command(fn: Callable[[Any, Settings, argparse.Namespace], Awaitable[int]]) -> Handler:
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


async def _enqueue(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
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
    finished = int(st["done"]) + int(st["failed"])
    filled = int(width * finished / total)
    return (
        f"{st['batch']} [{'#' * filled}{'.' * (width - filled)}] {finished}/{st['enqueued']} "
        f"done={st['done']} failed={st['failed']} pending={st['pending']}"
    )


async def _status(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
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


async def _results(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
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


async def _report(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
    from jobs.reports import batch_report, render_report

    await _require_batch(redis, settings, args.batch)
    rep = await batch_report(redis, settings.keys, args.batch)
    print(orjson.dumps(rep).decode() if args.json else render_report(rep))
    return 0


async def _dead(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
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

    rt = await build_runtime(settings)
    try:
        got = await cancel_batch(rt, args.batch)
    finally:
        await rt.gate.close()
        await rt.client.close()
        await rt.redis.aclose()
    print(
        f"batch {args.batch}: {got['gathered_canceled']} gathered requests canceled, "
        f"{got['api_batches_canceled']} API batches canceled"
    )
    return 0


async def _retry(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
    from worker.requeue import retry_batch

    await _require_batch(redis, settings, args.batch)
    n = await retry_batch(redis, settings, args.batch, dead_only=args.dead)
    print(f"re-enqueued {n} jobs of batch {args.batch}")
    return 0


async def _quality(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
    from worker.quality import quality_report, render_quality

    rep = await quality_report(redis, settings.keys)
    from worker.check_cli import quality_by_task

    rep["tasks"] = await quality_by_task(redis, settings)
    print(orjson.dumps(rep).decode() if args.json else render_quality(rep))
    return 0


# --- processes --------------------------------------------------------------------------------------
def _worker(args: argparse.Namespace) -> int:
    from worker import app

    settings = Settings()
    if not settings.redis_url:
        raise CliError("set REDIS_URL (routeq demo starts a private Redis for you)")
    if settings.anthropic_api_key is None and not settings.anthropic_base_url:
        raise CliError(
            "set ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL to a stand-in such as `routeq mock-api`)"
        )
    if args.ui_port is not None and settings.ui_token is None:
        raise CliError("--ui-port needs ROUTEQ_UI_TOKEN (every UI page and API call needs it)")
    try:
        return eventloop.run(
            app.run(settings, burst=args.burst, metrics_port=args.metrics_port, ui_port=args.ui_port)
        )
    except app.CannotStart as e:
        raise CliError(str(e)) from None


def _mock_api(args: argparse.Namespace) -> int:
    from worker.mock_api import run

    return run(args)


def _demo(args: argparse.Namespace) -> int:
    from worker import demo

    return demo.run(n_jobs=args.jobs, workers=args.workers, as_json=args.json, out=args.out)


def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {n})")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="routeq", description="Route bulk LLM jobs to the cheapest adequate Claude tier."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("enqueue", help="enqueue a JSONL file of jobs or a folder of documents")
    e.add_argument("path")
    e.add_argument(
        "--task",
        choices=[t.value for t in TaskType],
        help="task of each document (default summarize); for JSONL, of lines that give none",
    )
    e.add_argument("--prompt", help="instruction applied to each document; for JSONL, lines without one")
    e.add_argument("--system", help="system text applied to every job that gives none")
    e.add_argument(
        "--tag", action="append", default=[], metavar="K=V", help="tenant=, batch= or a free label"
    )
    e.add_argument("--batch", help="batch id (default: the first job's tags.batch, else a new one)")
    e.add_argument("--mode", choices=["realtime", "batch", "auto"], help="realtime, Message Batches, or auto")
    e.add_argument("--deadline", type=_deadline_arg, help="answer due by: ISO timestamp or duration like 6h")
    e.add_argument("--json", action="store_true")
    e.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="list skipped files"
    )
    e.set_defaults(func=_redis_command(_enqueue))

    w = sub.add_parser("worker", help="run a worker process")
    w.add_argument("--burst", action="store_true", help="exit when every queue is empty")
    w.add_argument("--metrics-port", type=int, default=None, help="serve /metrics and /healthz on this port")
    w.add_argument("--ui-port", type=int, default=None, help="also serve the web UI on 127.0.0.1:PORT")
    w.set_defaults(func=_worker)

    st = sub.add_parser("status", help="a batch's counts")
    st.add_argument("batch")
    st.add_argument("--json", action="store_true")
    st.add_argument("--watch", action="store_true", help="show a live progress bar until the batch ends")
    st.add_argument("--wait", action="store_true", help="return only when the batch has ended")
    st.add_argument("--interval", type=float, default=1.0, help="seconds between polls (--watch, --wait)")
    st.set_defaults(func=_redis_command(_status))
    for name, fn, helptext in (
        ("report", _report, "a batch's cost report per tier"),
        ("dead", _dead, "a batch's dead letters"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("batch")
        sp.add_argument("--json", action="store_true")
        sp.set_defaults(func=_redis_command(fn))
    mb = sub.add_parser("batches", help="routeq's Message Batches: id, model, status, counts, age, expiry")
    mb.add_argument("--json", action="store_true")
    mb.set_defaults(func=_redis_command(_batches))
    cn = sub.add_parser(
        "cancel", help="cancel a batch's batch-mode requests and the API batches holding them"
    )
    cn.add_argument("batch")
    cn.set_defaults(func=_redis_command(_cancel))
    r = sub.add_parser("results", help="a batch's per-job results as JSONL")
    r.add_argument("batch")
    r.add_argument("--out", help="write to this file instead of stdout")
    r.set_defaults(func=_redis_command(_results))
    rt = sub.add_parser("retry", help="re-enqueue a batch's failed jobs")
    rt.add_argument("batch")
    rt.add_argument("--dead", action="store_true", help="only dead-lettered jobs")
    rt.set_defaults(func=_redis_command(_retry))
    q = sub.add_parser("quality", help="shadow-check agreement per task and tier")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_redis_command(_quality))

    m = sub.add_parser("mock-api", help="serve the stand-in Messages API")
    from worker.mock_api import add_arguments

    add_arguments(m)
    m.set_defaults(func=_mock_api)

    d = sub.add_parser("demo", help="the whole path on embedded defaults")
    d.add_argument("--jobs", type=_positive, default=240)
    d.add_argument("--workers", type=_positive, default=2)
    d.add_argument("--json", action="store_true")
    d.add_argument("--out", type=Path, default=None, help="results JSONL (default out/demo-results.jsonl)")
    d.set_defaults(func=_demo)

    from worker.budget_cli import add_budget_commands
    from worker.check_cli import add_check_commands
    from worker.limits_cli import add_limits_commands
    from worker.router_cli import add_router_commands

    add_limits_commands(sub)
    add_router_commands(sub)
    add_budget_commands(sub)
    from worker.web.app import add_ui_command

    add_ui_command(sub)
    add_check_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "worker" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # One line per HTTP request is noise at fleet scale; routeq logs what matters about each call.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
