"""Reading input as a user gives it: folders, single documents, pipes, a BOM, empty input, hidden files,
--task/--prompt with JSONL; plus `budget show`, `router train` and the package list. Real redis-server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobs.connections import connect
from jobs.keys import Keys
from jobs.settings import Settings
from tests.helpers import run_cli
from worker.sandbox.embedded import routeq_cmd


def problem_lines(err: str) -> list[str]:
    """stderr without the line that names the batch before the first write."""
    return [line for line in err.strip().splitlines() if not line.startswith("enqueueing into batch ")]


ROOT = Path(__file__).resolve().parent.parent


def enqueue(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    rc, out, err = run_cli("enqueue", *args, "--json")
    return rc, (orjson.loads(out) if out.strip() else None), err


async def queued_jobs(redis_url: str, batch: str) -> list[dict[str, Any]]:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        ids = await redis.smembers(s.keys.batch_jobs(batch))
        docs = [orjson.loads(await redis.get(f"arq:job:{i.decode()}")) for i in ids]
        return [d["a"][0] for d in docs]
    finally:
        await redis.aclose()


@pytest.mark.integration
async def test_folder_rejection_names_the_file(redis_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    (tmp_path / "small.txt").write_text("fine")
    (tmp_path / "big20mb.txt").write_text("lorem ipsum " * 200_000)
    rc, out, err = await asyncio.to_thread(enqueue, str(tmp_path), "--prompt", "Summarise", "--batch", "f")
    assert rc == 1 and out is not None and out["enqueued"] == 1
    assert problem_lines(err)[0].startswith("big20mb.txt: documents too large")


@pytest.mark.integration
async def test_one_document_is_one_job(redis_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n" + "A line of notes.\n" * 1190)
    rc, out, err = await asyncio.to_thread(enqueue, str(doc), "--prompt", "Summarise", "--batch", "d")
    assert (rc, out) == (0, {"batch": "d", "enqueued": 1, "duplicates": 0, "rejected": 0}), err
    (job,) = await queued_jobs(redis_url, "d")
    assert job["documents"][0]["name"] == "notes.md" and job["task"] == "summarize"
    rc, out, err = await asyncio.to_thread(enqueue, str(doc), "--batch", "d2")
    assert rc == 1 and out is None and "notes.md is one document: give --prompt" in err


@pytest.mark.integration
async def test_task_prompt_system_tags_are_jsonl_defaults(
    redis_url: str, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    f = tmp_path / "jobs.jsonl"
    f.write_bytes(
        b'{"documents": [{"name": "a", "text": "alpha"}]}\n'
        b'{"task": "qa", "prompt": "own prompt", "tags": {"labels": {"k": "mine"}}}\n'
    )
    args = ("--task", "classify", "--prompt", "Label it. Labels: x, y", "--tag", "k=cli", "--tag", "z=1")
    rc, out, err = await asyncio.to_thread(enqueue, str(f), *args, "--batch", "defs")
    assert rc == 0 and out is not None and out["enqueued"] == 2, err
    jobs = sorted(await queued_jobs(redis_url, "defs"), key=lambda j: j["prompt"])
    assert [(j["task"], j["prompt"]) for j in jobs] == [
        ("classify", "Label it. Labels: x, y"),
        ("qa", "own prompt"),
    ]
    assert jobs[0]["tags"]["labels"] == {"k": "cli", "z": "1"}
    assert jobs[1]["tags"]["labels"] == {"k": "mine", "z": "1"}  # the line wins, label by label


@pytest.mark.integration
def test_stdin_and_fifo_are_read_once(redis_url: str, tmp_path: Path) -> None:
    lines = b"".join(orjson.dumps({"task": "qa", "prompt": f"q{i}"}) + b"\n" for i in range(3))
    env = {**os.environ, "REDIS_URL": redis_url}
    p = subprocess.run(
        routeq_cmd("enqueue", "/dev/stdin", "--batch", "in", "--json"),
        input=lines,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert orjson.loads(p.stdout)["enqueued"] == 3
    fifo = tmp_path / "jobs.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as w:
            w.write(lines.replace(b'"prompt": "q', b'"prompt": "fifo q'))

    writer = threading.Thread(target=feed)
    writer.start()
    p = subprocess.run(
        routeq_cmd("enqueue", str(fifo), "--batch", "fifo", "--json"),
        capture_output=True,
        env=env,
        timeout=60,
    )
    writer.join(10)
    assert p.returncode == 0, p.stderr
    assert orjson.loads(p.stdout)["enqueued"] == 3


@pytest.mark.integration
async def test_utf8_bom_is_accepted(redis_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"task": "qa", "prompt": "first"}\n{"task": "qa", "prompt": "second"}\n')
    rc, out, err = await asyncio.to_thread(enqueue, str(f), "--batch", "bom")
    assert rc == 0 and out is not None and out["enqueued"] == 2, err
    d = tmp_path / "docs"
    d.mkdir()
    (d / "a.txt").write_bytes(b"\xef\xbb\xbfhello")
    rc, out, err = await asyncio.to_thread(enqueue, str(d), "--prompt", "Summarise", "--batch", "bomdocs")
    assert rc == 0, err
    (job,) = await queued_jobs(redis_url, "bomdocs")
    redis = await connect(Settings(redis_url=redis_url))
    try:
        stored = await redis.get(Keys().batch_document("bomdocs", job["documents"][0]["ref"]))
    finally:
        await redis.aclose()
    assert stored == b"hello"  # stored once per batch, without the BOM


@pytest.mark.integration
async def test_empty_input_says_so(redis_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    empty, blank, folder = tmp_path / "empty.jsonl", tmp_path / "blank.jsonl", tmp_path / "nothing"
    empty.write_bytes(b"")
    blank.write_bytes(b"\n  \n")
    folder.mkdir()
    (folder / ".hidden.txt").write_text("hidden")
    (folder / "image.png").write_bytes(b"\x89PNG")
    for path, words in ((empty, "is empty"), (blank, "no jobs"), (folder, "no documents")):
        rc, out, err = await asyncio.to_thread(enqueue, str(path), "--prompt", "Summarise")
        assert rc == 1 and out is None, (path, out, err)
        assert words in err and len(problem_lines(err)) == 1, err
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        assert await redis.dbsize() == 0
    finally:
        await redis.aclose()


@pytest.mark.integration
async def test_hidden_files_are_skipped_and_listed(redis_url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.txt").write_text("git internals")
    (tmp_path / ".draft.md").write_text("a draft")
    (tmp_path / "real.md").write_text("the real one")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG")
    rc, out, err = await asyncio.to_thread(
        run_cli, "enqueue", str(tmp_path), "--prompt", "Summarise", "--batch", "hid", "-v"
    )
    assert (rc, out.strip()) == (0, "hid"), err
    assert [j["source"] for j in await queued_jobs(redis_url, "hid")] == ["real.md"]
    skipped = sorted(line for line in problem_lines(err) if ": skipped (" in line)
    assert skipped == [
        ".draft.md: skipped (hidden)",
        ".git/notes.txt: skipped (hidden)",
        "logo.png: skipped (not a supported document type)",
    ]
    rc, out, err = await asyncio.to_thread(
        run_cli, "enqueue", str(tmp_path), "--prompt", "S", "--batch", "h2"
    )
    assert rc == 0 and ": skipped (" not in err  # listed only when asked, counted always
    assert "skipped 3 file(s) of other types or hidden (--verbose lists them)" in err


@pytest.mark.integration
async def test_budget_show_has_one_money_format(redis_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        assert (await asyncio.to_thread(run_cli, "budget", "set", "--tenant", "acme", "--usd", "12.5"))[
            0
        ] == 0
        # a spend with sub-cent digits, as real calls leave
        await redis.hset(s.keys.budget("tenant", "acme"), "spent", 4_213_875_000)
        rc, out, _ = await asyncio.to_thread(run_cli, "budget", "show", "--tenant", "acme")
        assert rc == 0
        cells = out.splitlines()[1].split()[2:]
        assert cells == ["$12.500000", "$0.004214", "$0.000000", "$12.495786"]
    finally:
        await redis.aclose()


def test_router_train_needs_out(tmp_path: Path) -> None:
    shipped = ROOT / "worker" / "policy" / "data" / "router_model.json"
    before = shipped.read_bytes()
    data = tmp_path / "train.csv"
    data.write_text("domain,prompt,weak_correct,strong_correct\nd,hello,True,True\n")
    p = subprocess.run(
        [sys.executable, "-m", "worker.cli", "router", "train", "--data", str(data), "--no-cv"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert p.returncode == 2 and "--out" in p.stderr
    assert shipped.read_bytes() == before


def test_every_folder_with_files_is_a_listed_package() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(conf["tool"]["setuptools"]["packages"])
    for top in ("jobs", "worker"):
        for d in (ROOT / top).rglob("*"):
            if d.is_dir() and d.name != "__pycache__" and any(f.is_file() for f in d.iterdir()):
                name = ".".join(d.relative_to(ROOT).parts)
                assert name in listed, f"{name} holds files but is not in pyproject's package list"
