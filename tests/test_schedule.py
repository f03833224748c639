"""Mode and deadline per job: parsing, identity, pinning at enqueue, the CLI flags, the route decision."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from arq.jobs import deserialize_job
from pydantic import ValidationError

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.schedule import deadline_epoch, parse_duration, parse_timestamp, pin_deadline, with_schedule
from jobs.serialization import deserialize
from jobs.settings import Settings
from jobs.sources import parse_job
from worker.batches.decide import choose_route

HOUR = 3600.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("45m", 2700), ("6h", 21600), ("2d", 172800), ("1h30m", 5400), ("1.5h", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    span = parse_duration(text)
    assert span is not None and span.total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "6", "h", "6x", "-1h", "1m1h", "tomorrow"])
def test_not_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_timestamps_need_a_zone() -> None:
    at = parse_timestamp("2026-12-02T18:00:00Z")
    assert at is not None and at.timestamp() == dt.datetime(2026, 12, 2, 18, tzinfo=dt.UTC).timestamp()
    assert parse_timestamp("2026-12-02T19:00:00+01:00") == at
    assert parse_timestamp("2026-12-02T18:00:00") is None


def test_deadline_epoch_and_pinning() -> None:
    assert deadline_epoch("6h", 1000.0) == 1000.0 + 6 * HOUR
    assert (
        deadline_epoch("2026-12-02T18:00:00Z", 0.0) == dt.datetime(2026, 12, 2, 18, tzinfo=dt.UTC).timestamp()
    )
    pinned = pin_deadline("1h", 1_800_000_000.0)
    assert pinned == "2027-01-15T09:00:00Z" and deadline_epoch(pinned, 0.0) == 1_800_000_000.0 + HOUR
    assert pin_deadline("2026-12-02T18:00:00Z", 5.0) == "2026-12-02T18:00:00Z"
    assert pin_deadline(None, 5.0) is None


def test_contract_accepts_mode_and_deadline_and_names_a_bad_one() -> None:
    job = parse_job({"task": "qa", "prompt": "p", "constraints": {"mode": "batch", "deadline": "6h"}})
    assert job.constraints.mode == "batch" and job.constraints.deadline == "6h"
    with pytest.raises(ValidationError, match="deadline 'soon' is neither"):
        parse_job({"task": "qa", "prompt": "p", "constraints": {"deadline": "soon"}})
    with pytest.raises(ValidationError, match="mode"):
        parse_job({"task": "qa", "prompt": "p", "constraints": {"mode": "later"}})


def test_mode_and_deadline_are_not_identity() -> None:
    plain = Job(task="qa", prompt="same work")  # type: ignore[arg-type]
    timed = parse_job(
        {"task": "qa", "prompt": "same work", "constraints": {"mode": "auto", "deadline": "2h"}}
    )
    assert plain.job_id == timed.job_id
    assert timed.placed_wire("b")["internal_id"] == timed.with_ids("b").job_id == plain.with_ids("b").job_id
    pinned = parse_job({"task": "qa", "prompt": "x", "constraints": {"max_tier": "sonnet", "deadline": "2h"}})
    other = parse_job({"task": "qa", "prompt": "x", "constraints": {"max_tier": "opus"}})
    assert pinned.job_id != other.job_id  # other constraints still are


def test_with_schedule_fills_only_what_a_job_leaves_open() -> None:
    own = parse_job({"task": "qa", "prompt": "a", "constraints": {"mode": "realtime"}})
    bare = parse_job({"task": "qa", "prompt": "b"})
    out = list(with_schedule([own, bare, "rejected line"], "batch", "6h"))
    assert out[0].constraints.mode == "realtime" and out[0].constraints.deadline == "6h"  # type: ignore[union-attr]
    assert out[1].constraints.mode == "batch" and out[1].constraints.deadline == "6h"  # type: ignore[union-attr]
    assert out[2] == "rejected line"


def test_settings_default_deadline_is_validated() -> None:
    assert Settings(default_mode="auto", default_deadline="12h").default_deadline == "12h"
    with pytest.raises(ValidationError, match="default_deadline"):
        Settings(default_deadline="whenever")


@pytest.mark.parametrize(
    ("mode", "deadline", "expected"),
    [
        ("realtime", None, "realtime"),
        ("realtime", 100 * HOUR, "realtime"),
        ("batch", None, "batch"),
        ("auto", None, "batch"),
        ("batch", 2 * HOUR, "batch"),
        ("auto", 2 * HOUR, "batch"),
        ("auto", 1.1 * HOUR, "batch"),  # exactly latency + margin left: still in time
        ("auto", 1.1 * HOUR - 1, "realtime"),
        ("batch", 0.5 * HOUR, "realtime"),  # near the deadline even a batch job goes realtime
        ("auto", -HOUR, "realtime"),  # already late
    ],
)
def test_choose_route(mode: str, deadline: float | None, expected: str) -> None:
    now = 1_000_000.0
    at = None if deadline is None else now + deadline
    got = choose_route(mode, at, now, expected_latency_s=HOUR, margin_s=0.1 * HOUR)  # type: ignore[arg-type]
    assert got == expected


@pytest.mark.integration
async def test_producer_pins_durations_at_enqueue(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    r = await connect(s)
    try:
        job = parse_job({"task": "qa", "prompt": "p", "constraints": {"mode": "batch", "deadline": "2h"}})
        before = time.time()
        res = await Producer(r, s).enqueue([job], batch="sched")
        wire = deserialize_job(await r.get(f"arq:job:{res.job_ids[0]}"), deserializer=deserialize).args[0]
        c = wire["constraints"]
        assert c["mode"] == "batch" and c["deadline"].endswith("Z")
        assert before + 2 * HOUR - 1 <= deadline_epoch(c["deadline"], 0.0) <= time.time() + 2 * HOUR + 1
        assert res.job_ids[0] == job.with_ids("sched").job_id
    finally:
        await r.aclose()


@pytest.mark.integration
def test_cli_enqueue_mode_and_deadline(redis_url: str, tmp_path: Path) -> None:
    src = tmp_path / "jobs.jsonl"
    lines = [
        {"task": "qa", "prompt": "one"},
        {"task": "qa", "prompt": "two", "constraints": {"mode": "realtime"}},
    ]
    src.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEQ_")} | {"REDIS_URL": redis_url}
    cmd = [sys.executable, "-m", "worker.cli", "enqueue", str(src), "--batch", "cli-sched", "--json"]
    ok = subprocess.run(
        [*cmd, "--mode", "batch", "--deadline", "6h"], env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*cmd, "--deadline", "soonish"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "deadline 'soonish' is neither" in bad.stderr
    assert "Traceback" not in bad.stderr

    async def modes() -> list[tuple[str, str]]:
        s = Settings(redis_url=redis_url)
        r = await connect(s)
        try:
            out = []
            for jid in await r.smembers(s.keys.batch_jobs("cli-sched")):
                raw = await r.get(f"arq:job:{jid.decode()}")
                c = deserialize_job(raw, deserializer=deserialize).args[0]["constraints"]
                out.append((c["mode"], c["deadline"]))
            return sorted(out)
        finally:
            await r.aclose()

    got = asyncio.run(modes())
    assert [m for m, _ in got] == ["batch", "realtime"]
    assert all(d.endswith("Z") and deadline_epoch(d, 0) > time.time() + 5 * HOUR for _, d in got)
