"""``routeq quality``: shadow-check agreement per task type and tier."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from jobs.settings import Settings


async def cmd_quality(redis: Any, settings: Settings, args: argparse.Namespace) -> int:
    from worker.fleet.quality import quality_report
    from worker.policy.grading import render_quality

    rep = await quality_report(redis, settings.keys)
    from worker.cli.check import quality_by_task

    rep["tasks"] = await quality_by_task(redis, settings)
    print(orjson.dumps(rep).decode() if args.json else render_quality(rep))
    return 0
