"""``routeq check score``: one score line per input line, in order; bad lines named, not fatal."""

from __future__ import annotations

import json
import subprocess
import sys

PROBLEM = "Tom has 3 boxes with 12 apples each. He eats 5 apples. How many apples are left?"


def test_check_score_reads_jsonl_and_names_bad_lines() -> None:
    lines = [
        {"task": "reason", "prompt": PROBLEM, "answer": "3 * 12 = 36, 36 - 5 = 31. The answer is 31."},
        {"task": "reason", "prompt": PROBLEM, "answer": "3 * 12 = 38, so approximately 38 - 5 = 33.5"},
        "{not json",
        {"task": "nope", "prompt": "x", "answer": "y"},
        {"task": "extract", "prompt": "x", "answer": "{}", "output": {"type": "json"}},
    ]
    stdin = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    proc = subprocess.run(
        [sys.executable, "-m", "worker.cli", "check", "score"], input=stdin, capture_output=True, text=True
    )
    out = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(out) == 5
    assert out[0]["score"] < 0.3 < out[1]["score"]
    assert any("re-compute" in r for r in out[1]["reasons"])
    assert out[2]["score"] is None and out[3]["score"] is None
    assert out[4]["score"] < 1.0
    errors = proc.stderr.splitlines()
    assert errors[0].startswith("routeq check score: line 3: not JSON")
    assert errors[1].startswith("routeq check score: line 4: task:")
    assert "Traceback" not in proc.stderr and proc.returncode == 1
