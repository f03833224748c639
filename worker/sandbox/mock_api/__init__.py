"""Local stand-in for the Anthropic Messages API (``routeq mock-api``); see docs in each module."""

from __future__ import annotations

from worker.sandbox.mock_api.cli import add_arguments, run
from worker.sandbox.mock_api.config import MockConfig, ModelOverrides, load_config_file
from worker.sandbox.mock_api.faults import FaultPlan
from worker.sandbox.mock_api.server import JOB_HEADER, RunningServer, start_server
from worker.sandbox.mock_api.tokens import count_text

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
