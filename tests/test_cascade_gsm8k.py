"""GSM8K cascade jobs through real workers, the stand-in replaying recorded weak/strong answers.

A small sample of the dev split (the full run with figures is bench/cascade_e2e.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cascade_e2e import DATA, jobs_for, load_rows, outcome, write_replay
from jobs.connections import connect
from jobs.producer import Producer
from jobs.results import JobResult
from jobs.settings import Settings
from jobs.tiers import Tier
from tests.helpers import Fleet, wait_batch

pytestmark = pytest.mark.integration


async def test_gsm8k_sample_as_cascade_jobs(redis_url: str, tmp_path: Path) -> None:
    if not DATA.exists():
        pytest.skip("../shared/data is not present (it exists only in development and CI)")
    rows = load_rows(DATA, 80)
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    with Fleet(redis_url, workers=2, api_args=("--replay", str(write_replay(rows, tmp_path / "r.jsonl")))):
        res = await Producer(redis, s).enqueue(jobs_for(rows), batch="gsm")
        st = await wait_batch(s, redis, "gsm", timeout=120)
        results = [JobResult.model_validate_json(await redis.get(s.keys.result(j))) for j in res.job_ids]
    await redis.aclose()
    assert st["done"] == len(rows), st
    for row, r in zip(rows, results, strict=True):
        first = r.attempts[0]
        assert first.tier == Tier.haiku and first.check_score is not None
        escalated = first.check_score >= s.cascade_thresholds[Tier.haiku]
        assert (r.tier != Tier.haiku) == escalated
        assert r.output == (row["strong_response"] if escalated else row["weak_response"])
    got = outcome(rows, results)
    assert got["quality_ratio"] >= 0.93 and got["left_haiku_share"] <= 0.6, got
