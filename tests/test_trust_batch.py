"""One batch identity whatever the user gives (--batch, --tag batch=, tags.batch), and batch and tenant
names checked at enqueue with the rule, never accepted and then failed in the worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobs.connections import connect
from jobs.settings import Settings
from tests.helpers import Fleet, run_cli, wait_batch


def problem_lines(err: str) -> list[str]:
    """stderr without the line that names the batch before the first write."""
    return [line for line in err.strip().splitlines() if not line.startswith("enqueueing into batch ")]


pytestmark = pytest.mark.integration

# The README's own contract example, as one line.
README_JOB = {
    "task": "qa",
    "prompt": "What is the liability cap?",
    "system": "You are a contracts analyst.",
    "documents": [{"name": "contract-A.txt", "text": "The liability cap is USD 1,000,000. " * 20}],
    "tags": {"tenant": "legal", "batch": "q3-review", "labels": {"source": "crm"}},
    "constraints": {"min_tier": "haiku", "max_tier": "sonnet"},
    "max_output_tokens": 500,
    "output": {"type": "json", "schema": {"type": "object"}},
}


def jsonl(path: Path, *jobs: dict[str, Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(j) + b"\n" for j in jobs))
    return path


async def test_tags_batch_is_the_batch_enqueue_prints(redis_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    s = Settings(redis_url=redis_url)
    f = jsonl(tmp_path / "jobs.jsonl", README_JOB, {**README_JOB, "prompt": "Who are the parties?"})
    redis = await connect(s)
    with Fleet(redis_url, workers=1, ROUTEQ_LEARNED_ROUTER="false"):
        try:
            rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(f))
            assert (rc, out.strip()) == (0, "q3-review"), err
            st = await wait_batch(s, redis, "q3-review", timeout=60)
            assert (st["done"], st["tenant"]) == (2, "legal"), st
            rc, out, _ = await asyncio.to_thread(run_cli, "status", "q3-review", "--json")
            assert rc == 0 and orjson.loads(out)["pending"] == 0
            out_file = tmp_path / "results.jsonl"
            rc, _, _ = await asyncio.to_thread(run_cli, "results", "q3-review", "--out", str(out_file))
            got = [orjson.loads(line) for line in out_file.read_bytes().splitlines()]
            assert {r["batch"] for r in got} == {"q3-review"} and len(got) == 2
            rc, out, _ = await asyncio.to_thread(run_cli, "report", "q3-review", "--json")
            rep = orjson.loads(out)
            assert rep["done"] == 2 and rep["cost_pusd"] > 0
            # budgets keep the spend under the same batch id
            rc, out, _ = await asyncio.to_thread(run_cli, "budget", "show", "--batch", "q3-review", "--json")
            assert orjson.loads(out)[0]["spent_pusd"] == rep["cost_pusd"]
            # the generated-id batch of before does not exist: nothing else was created
            assert await redis.zrange(s.keys.batches, 0, -1) == [b"q3-review"]
        finally:
            await redis.aclose()


async def test_conflicting_batch_values_are_errors(redis_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    f = jsonl(tmp_path / "jobs.jsonl", {"task": "qa", "prompt": "a"})
    rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(f), "--batch", "x1", "--tag", "batch=x2")
    assert rc != 0 and out == ""
    assert "--batch 'x1' and --tag batch='x2' differ" in err
    # --batch and --tag batch= that agree are one batch
    rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(f), "--batch", "x1", "--tag", "batch=x1")
    assert (rc, out.strip()) == (0, "x1"), err
    # a line naming another batch than --batch: rejected by line, the rest enqueued
    g = jsonl(
        tmp_path / "g.jsonl",
        {"task": "qa", "prompt": "b"},
        {"task": "qa", "prompt": "c", "tags": {"batch": "elsewhere"}},
        {"task": "qa", "prompt": "d", "tags": {"batch": "x3"}},
    )
    rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(g), "--batch", "x3", "--json")
    assert rc == 1 and orjson.loads(out)["enqueued"] == 2
    assert problem_lines(err)[0].startswith(
        "2: tags.batch 'elsewhere' differs from this enqueue's batch 'x3'"
    )
    # without --batch the first line's tags.batch is the batch; a later different one is refused
    h = jsonl(
        tmp_path / "h.jsonl",
        {"task": "qa", "prompt": "e", "tags": {"batch": "first"}},
        {"task": "qa", "prompt": "f"},
        {"task": "qa", "prompt": "g", "tags": {"batch": "second"}},
    )
    rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(h), "--json")
    expected = {"batch": "first", "enqueued": 2, "duplicates": 0, "rejected": 1}
    assert rc == 1 and orjson.loads(out) == expected
    assert problem_lines(err)[0].startswith(
        "3: tags.batch 'second' differs from this enqueue's batch 'first'"
    )


@pytest.mark.parametrize("bad", ["my batch", "a*b", "a:b", "x" * 300, "ünï", ""])
async def test_bad_batch_names_are_refused_at_enqueue(
    redis_url: str, tmp_path: Path, monkeypatch, bad: str
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    f = jsonl(tmp_path / "jobs.jsonl", {"task": "qa", "prompt": "a"})
    for args in (["--batch", bad], ["--tag", f"batch={bad}"], ["--tag", f"tenant={bad}"]):
        if not bad and args[0] == "--tag":
            continue  # "--tag batch=" with nothing after '=' is the k=v usage error, tested below
        rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(f), *args)
        assert rc != 0 and out == "", (args, out, err)
        assert len(problem_lines(err)) == 1, err
        assert "letter, digit, '-', '_' or '.'" in err, err
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        assert await redis.dbsize() == 0  # nothing accepted, so nothing for a worker to fail
    finally:
        await redis.aclose()


async def test_bad_names_in_lines_are_rejected_by_line(redis_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    f = jsonl(
        tmp_path / "jobs.jsonl",
        {"task": "qa", "prompt": "a", "tags": {"batch": "a:b"}},
        {"task": "qa", "prompt": "b", "tags": {"tenant": "t" * 200}},
        {"task": "qa", "prompt": "c"},
    )
    rc, out, err = await asyncio.to_thread(run_cli, "enqueue", str(f), "--batch", "fine", "--json")
    assert rc == 1 and orjson.loads(out)["enqueued"] == 1
    reasons = dict(line.split(": ", 1) for line in problem_lines(err))
    assert "tags.batch" in reasons["1"] and "':'" in reasons["1"]
    assert "tags.tenant" in reasons["2"] and "200 characters" in reasons["2"]


@pytest.mark.parametrize(("flag", "bad"), [("--tenant", ""), ("--tenant", "a b"), ("--batch", "a:b")])
async def test_budget_set_refuses_bad_names(redis_url: str, monkeypatch, flag: str, bad: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    rc, out, err = await asyncio.to_thread(run_cli, "budget", "set", flag, bad, "--usd", "5")
    assert rc == 2 and out == ""
    assert "letter, digit, '-', '_' or '.'" in err and "Traceback" not in err
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        assert await redis.dbsize() == 0
    finally:
        await redis.aclose()
