"""Local stand-in for the Anthropic Messages API (``routeq mock-api``); see docs in each module.

Its names are loaded on first use: every ``routeq`` command builds the ``mock-api`` argument parser, and a
worker should not carry the stand-in's server, answers and PDF reader in its memory.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.sandbox.mock_api.cli import add_arguments, run
    from worker.sandbox.mock_api.config import MockConfig, ModelOverrides, load_config_file
    from worker.sandbox.mock_api.faults import FaultPlan
    from worker.sandbox.mock_api.server import JOB_HEADER, RunningServer, start_server
    from worker.sandbox.mock_api.tokens import count_text

_HOME = {
    "add_arguments": "cli",
    "run": "cli",
    "MockConfig": "config",
    "ModelOverrides": "config",
    "load_config_file": "config",
    "FaultPlan": "faults",
    "JOB_HEADER": "server",
    "RunningServer": "server",
    "start_server": "server",
    "count_text": "tokens",
}

__all__ = [
    "JOB_HEADER",
    "FaultPlan",
    "MockConfig",
    "ModelOverrides",
    "RunningServer",
    "add_arguments",
    "count_text",
    "load_config_file",
    "run",
    "start_server",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
