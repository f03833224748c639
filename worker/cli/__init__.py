"""The ``routeq`` command: one module per command group, common plumbing in ``common``.
Thin shells over the modules that do the work."""

from worker.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
