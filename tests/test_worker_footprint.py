"""A worker process carries only what it runs: no document readers, no stand-in server.

Together they were ~30 MB of every worker's memory (bench/scale.py's RSS), loaded because the CLI built the
``mock-api`` parser and job intake imported the folder reader's module.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HEAVY = ("pypdf", "docx", "bs4", "markdownify", "PIL", "worker.sandbox.mock_api.server")

PROBE = f"""
import sys
from worker.cli.main import build_parser
import worker.app
build_parser().parse_args(["worker"])
print(",".join(m for m in {HEAVY!r} if m in sys.modules))
"""


def test_a_worker_imports_no_document_reader_nor_the_stand_in() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == ""


def test_the_readers_load_when_a_document_is_read() -> None:
    probe = (
        "import sys\n"
        "from jobs.documents.loader import load_bytes\n"
        "load_bytes(b'<p>hi</p>', '.html', name='a.html')\n"
        "print('bs4' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "True"
