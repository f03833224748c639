"""``routeq worker``, ``routeq mock-api`` and ``routeq demo``: the long-running processes."""

from __future__ import annotations

import argparse

from jobs.settings import Settings
from worker import eventloop
from worker.cli.errors import CliError


# --- processes --------------------------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
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


def cmd_mock_api(args: argparse.Namespace) -> int:
    from worker.sandbox.mock_api import run

    return run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.sandbox import demo

    return demo.run(n_jobs=args.jobs, workers=args.workers, as_json=args.json, out=args.out)
