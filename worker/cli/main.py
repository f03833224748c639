"""The ``routeq`` parser and entry point."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from jobs.contract import TaskType
from worker.cli.batch import (
    _batches,
    _cancel,
    _deadline_arg,
    _positive,
    cmd_dead,
    cmd_enqueue,
    cmd_report,
    cmd_results,
    cmd_retry,
    cmd_status,
)
from worker.cli.common import redis_command
from worker.cli.errors import run_command
from worker.cli.processes import cmd_demo, cmd_mock_api, cmd_worker
from worker.cli.quality import cmd_quality


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
    e.set_defaults(func=redis_command(cmd_enqueue))

    w = sub.add_parser("worker", help="run a worker process")
    w.add_argument("--burst", action="store_true", help="exit when every queue is empty")
    w.add_argument("--metrics-port", type=int, default=None, help="serve /metrics and /healthz on this port")
    w.add_argument("--ui-port", type=int, default=None, help="also serve the web UI on 127.0.0.1:PORT")
    w.set_defaults(func=cmd_worker)

    st = sub.add_parser("status", help="a batch's counts")
    st.add_argument("batch")
    st.add_argument("--json", action="store_true")
    st.add_argument("--watch", action="store_true", help="show a live progress bar until the batch ends")
    st.add_argument("--wait", action="store_true", help="return only when the batch has ended")
    st.add_argument("--interval", type=float, default=1.0, help="seconds between polls (--watch, --wait)")
    st.set_defaults(func=redis_command(cmd_status))
    for name, fn, helptext in (
        ("report", cmd_report, "a batch's cost report per tier"),
        ("dead", cmd_dead, "a batch's dead letters"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("batch")
        sp.add_argument("--json", action="store_true")
        sp.set_defaults(func=redis_command(fn))
    mb = sub.add_parser("batches", help="routeq's Message Batches: id, model, status, counts, age, expiry")
    mb.add_argument("--json", action="store_true")
    mb.set_defaults(func=redis_command(_batches))
    cn = sub.add_parser(
        "cancel", help="cancel a batch's batch-mode requests and the API batches holding them"
    )
    cn.add_argument("batch")
    cn.set_defaults(func=redis_command(_cancel))
    r = sub.add_parser("results", help="a batch's per-job results as JSONL")
    r.add_argument("batch")
    r.add_argument("--out", help="write to this file instead of stdout")
    r.set_defaults(func=redis_command(cmd_results))
    rt = sub.add_parser("retry", help="re-enqueue a batch's failed jobs")
    rt.add_argument("batch")
    rt.add_argument("--dead", action="store_true", help="only dead-lettered jobs")
    rt.set_defaults(func=redis_command(cmd_retry))
    q = sub.add_parser("quality", help="shadow-check agreement per task and tier")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=redis_command(cmd_quality))

    m = sub.add_parser("mock-api", help="serve the stand-in Messages API")
    from worker.sandbox.mock_api import add_arguments

    add_arguments(m)
    m.set_defaults(func=cmd_mock_api)

    d = sub.add_parser("demo", help="the whole path on embedded defaults")
    d.add_argument("--jobs", type=_positive, default=240)
    d.add_argument("--workers", type=_positive, default=2)
    d.add_argument("--json", action="store_true")
    d.add_argument("--out", type=Path, default=None, help="results JSONL (default out/demo-results.jsonl)")
    d.set_defaults(func=cmd_demo)

    from worker.cli.budget import add_budget_commands
    from worker.cli.check import add_check_commands
    from worker.cli.limits import add_limits_commands
    from worker.cli.router import add_router_commands

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
