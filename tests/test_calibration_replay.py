"""Calibration from replayed shadow traffic: real redis, real workers, the stand-in replaying GSM8K.

The full measurement on held-out traffic is bench/calibration_replay.py; this shows the loop closes:
shadow runs of cascade jobs label their cheap answers (by final numbers, or by a grading call the
stand-in answers from the recorded correctness), ``routeq check calibrate`` turns the labels into a
threshold, and the running workers then escalate the answers the labels said to.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bench.calibration_replay import cascade_jobs
from bench.cascade_e2e import DATA, load_rows, write_replay
from jobs.connections import connect
from jobs.producer import Producer
from jobs.results import JobResult
from jobs.settings import Settings
from jobs.tiers import Tier
from tests.helpers import Fleet, run_cli, wait_batch
from worker.fleet import calibration, quality
from worker.policy.calibration import MIN_LABELS

pytestmark = pytest.mark.integration

N = MIN_LABELS + 6  # just enough labels to calibrate rather than fall back


async def test_labels_from_replayed_shadow_traffic_move_the_threshold(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not DATA.exists():
        pytest.skip("../shared/data is not present (it exists only in development and CI)")
    rows = load_rows(DATA, N)
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    monkeypatch.setenv("REDIS_URL", redis_url)
    env = {"ROUTEQ_SHADOW_RATE": "1.0", "ROUTEQ_SHADOW_POLL_S": "0.05", "ROUTEQ_SHADOW_BUDGET_USD": "100"}
    api_args = ("--replay", str(write_replay(rows, tmp_path / "replay.jsonl")))
    with Fleet(redis_url, workers=2, api_args=api_args, **env):
        before_ids = (await Producer(redis, s).enqueue(cascade_jobs(rows, "a", range(N)), batch="a")).job_ids
        await wait_batch(s, redis, "a", timeout=60)
        deadline = time.monotonic() + 30
        while (await quality.quality_report(redis, s.keys))["overall"]["total"] < N:
            assert time.monotonic() < deadline, "shadow labels did not arrive"
            await asyncio.sleep(0.1)
        labels = (await calibration.load_labels(redis, s.keys, "reason"))[("reason", "haiku")]
        # every label is about the cheap haiku answer, escalated or not, and both kinds occur
        assert len(labels) == N and 0 < sum(x.agree for x in labels) < N
        raw = [json.loads(x) for x in await redis.lrange(s.keys.quality_labels, 0, -1)]
        assert {x["how"] for x in raw} == {"compare", "graded"}
        by_id = dict(zip(before_ids, rows, strict=True))
        for x in labels:  # a label never says "agree" about an answer recorded wrong next to a right one
            row = by_id[x.key]
            if row["strong_correct"] == "True" and row["weak_correct"] == "False":
                assert not x.agree

        rc, out, err = await asyncio.to_thread(run_cli, "check", "calibrate", "--task", "reason", "--json")
        assert rc == 0, err
        cal = json.loads(out)["calibrations"][0]
        assert cal["fallback"] is False and cal["threshold"] is not None
        # ~40% of the cheap answers disagree: the shipped thresholds' kept quality is below the target,
        # so the labels must make the cascade escalate more to reach it (measured on the same jobs
        # below; the held-out share alone is ~20 jobs, too few to compare with the whole run)
        before = [JobResult.model_validate_json(await redis.get(s.keys.result(j))) for j in before_ids]
        left_before = sum(r.tier != Tier.haiku for r in before) / N

        await asyncio.sleep(calibration.REFRESH_S + 1.0)  # the running workers re-read the calibration
        again = cascade_jobs(rows, "b", range(N))
        after_ids = (await Producer(redis, s).enqueue(again, batch="b")).job_ids
        await wait_batch(s, redis, "b", timeout=60)
        after = [JobResult.model_validate_json(await redis.get(s.keys.result(j))) for j in after_ids]
        left_after = sum(r.tier != Tier.haiku for r in after) / N
        assert left_after > left_before
        # and what it escalates now are the answers the labels called wrong: fewer of them are kept
        label_of = {x.key: x.agree for x in labels}
        agreed = [label_of[j] for j in before_ids]
        kept_bad_before = sum(r.tier == Tier.haiku and not a for r, a in zip(before, agreed, strict=True))
        kept_bad_after = sum(r.tier == Tier.haiku and not a for r, a in zip(after, agreed, strict=True))
        assert kept_bad_after < kept_bad_before
    await redis.aclose()
