"""``python -m worker.mock_api [options]``: the same server as ``routeq mock-api``."""

from __future__ import annotations

from worker.sandbox.mock_api.cli import main

raise SystemExit(main())
