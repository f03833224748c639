"""Results say which document and which caller job they belong to; a JSON answer is a JSON value; shadow
spend is spend (report and quality show it, savings are net of it). Real redis-server, a real worker
process, the stand-in API."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobs.connections import connect
from jobs.keys import SHADOW_COST_FIELD
from jobs.settings import Settings
from tests.helpers import Fleet, run_cli, wait_batch

pytestmark = pytest.mark.integration

SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}


def results(tmp_path: Path, batch: str) -> list[dict[str, Any]]:
    out = tmp_path / f"{batch}.jsonl"
    rc, _, err = run_cli("results", batch, "--out", str(out))
    assert rc == 0, err
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


async def test_rows_carry_source_id_labels_and_parsed_json(
    redis_url: str, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    s = Settings(redis_url=redis_url)
    docs = tmp_path / "peps"
    (docs / "sub").mkdir(parents=True)
    (docs / "pep-0008.txt").write_text("Style Guide for Python Code. " * 30)
    (docs / "sub" / "pep-0020.md").write_text("The Zen of Python. " * 30)
    lines = tmp_path / "jobs.jsonl"
    lines.write_bytes(
        orjson.dumps(
            {
                "id": "ticket-42",
                "task": "classify",
                "prompt": "Classify this ticket: my invoice is wrong.",
                "tags": {"labels": {"crm": "case-42"}},
                "output": {"type": "json", "schema": SCHEMA},
            }
        )
        + b"\n"
    )
    redis = await connect(s)
    with Fleet(redis_url, workers=1, ROUTEQ_LEARNED_ROUTER="false"):
        try:
            rc, _, err = await asyncio.to_thread(
                run_cli, "enqueue", str(docs), "--prompt", "Summarise.", "--tag", "team=py", "--batch", "fold"
            )
            assert rc == 0, err
            rc, _, err = await asyncio.to_thread(run_cli, "enqueue", str(lines), "--batch", "lines")
            assert rc == 0, err
            await wait_batch(s, redis, "fold", timeout=60)
            await wait_batch(s, redis, "lines", timeout=60)
            folder_rows = await asyncio.to_thread(results, tmp_path, "fold")
            assert sorted(r["source"] for r in folder_rows) == ["pep-0008.txt", "sub/pep-0020.md"]
            assert all(r["labels"] == {"team": "py"} and r["id"] is None for r in folder_rows)
            assert all(isinstance(r["output"], str) for r in folder_rows)
            (row,) = await asyncio.to_thread(results, tmp_path, "lines")
            assert (row["status"], row["id"], row["labels"]) == ("done", "ticket-42", {"crm": "case-42"})
            assert isinstance(row["output"], dict) and isinstance(row["output"]["label"], str), row["output"]
            assert orjson.loads(row["output_text"]) == row["output"]
        finally:
            await redis.aclose()


async def test_shadow_spend_shows_in_report_and_quality(redis_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    s = Settings(redis_url=redis_url)
    f = tmp_path / "jobs.jsonl"
    f.write_bytes(
        b"".join(
            orjson.dumps({"task": "qa", "prompt": f"Question {i}: why?", "constraints": {"tier": "haiku"}})
            + b"\n"
            for i in range(4)
        )
    )
    redis = await connect(s)
    with Fleet(redis_url, workers=1, ROUTEQ_LEARNED_ROUTER="false", ROUTEQ_SHADOW_RATE="1"):
        try:
            rc, _, err = await asyncio.to_thread(run_cli, "enqueue", str(f), "--batch", "sh")
            assert rc == 0, err
            await wait_batch(s, redis, "sh", timeout=60)
            deadline = time.monotonic() + 60
            while (await redis.hget(s.keys.quality, "qa:haiku:total")) != b"4":
                assert time.monotonic() < deadline, await redis.hgetall(s.keys.quality)
                await asyncio.sleep(0.2)
            shadow = int(await redis.hget(s.keys.quality, SHADOW_COST_FIELD))
            assert shadow > 0
            rc, out, _ = await asyncio.to_thread(run_cli, "report", "sh", "--json")
            rep = orjson.loads(out)
            # the one batch carries all of the fleet's shadow spend, and its savings are net of it
            assert rep["shadow_cost_pusd"] == shadow
            assert rep["total_cost_pusd"] == rep["cost_pusd"] + shadow
            net = 100.0 * (rep["baseline_pusd"] - rep["cost_pusd"] - shadow) / rep["baseline_pusd"]
            assert rep["savings_pct"] == round(net, 2)
            rc, text, _ = await asyncio.to_thread(run_cli, "report", "sh")
            assert "shadow quality checks" in text and "less shadow checks" in text
            rc, out, _ = await asyncio.to_thread(run_cli, "quality", "--json")
            assert orjson.loads(out)["shadow_cost_pusd"] == shadow
            rc, text, _ = await asyncio.to_thread(run_cli, "quality")
            header, _, first = text.splitlines()[:3]
            assert header.split() == ["task", "tier", "agree", "total", "rate"]
            assert first.split()[:2] == ["qa", "haiku"] and first.split()[3] == "4"
            assert "shadow spend $" in text
        finally:
            await redis.aclose()
