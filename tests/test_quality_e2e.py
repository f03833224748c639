"""Escalation and shadow checks with real workers, the stand-in API and the real SDK."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobs.connections import connect
from jobs.contract import Job
from jobs.producer import Producer
from jobs.reports import batch_report, load_result
from jobs.settings import Settings
from jobs.tiers import Tier
from tests.helpers import Fleet, wait_batch

pytestmark = pytest.mark.integration

SCHEMA = {"type": "object", "required": ["label"], "properties": {"label": {"type": "string"}}}


def job(prompt: str, **kw: object) -> Job:
    return Job.model_validate({"task": "classify", "prompt": prompt, **kw})


async def test_escalation_cascade_and_shadow_checks(redis_url: str, tmp_path: Path) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    jobs = [
        # a cheap answer that is not JSON: escalates to sonnet, which answers well
        job("Label this ticket. [[mock:bad-json:haiku]]", output={"type": "json", "schema": SCHEMA}),
        # truncated at max_tokens on haiku: escalates
        job("Summarise the refund policy. [[mock:truncate:haiku]]", task="summarize"),
        # a refusal everywhere: escalates up to the job's ceiling, then fails with the reason
        job("Label it. [[mock:refuse]]", constraints={"max_tier": "sonnet"}),
        # fine on haiku; shadowed on opus: agreement
        job("Labels: spam, ham\nIs 'WIN A PRIZE NOW' spam?"),
        # fine on haiku; shadowed on opus, which answers differently: disagreement
        job("Labels: spam, ham\nIs 'lunch at noon?' spam? [[mock:differ:haiku]]"),
        # not JSON on haiku nor on sonnet: ends on opus, whose answer the shadow check reuses
        job(
            "Label this invoice. [[mock:bad-json:haiku]] [[mock:bad-json:sonnet]]",
            output={"type": "json", "schema": SCHEMA},
        ),
    ]
    env = {"ROUTEQ_SHADOW_RATE": "1.0", "ROUTEQ_LEARNED_ROUTER": "false"}
    with Fleet(redis_url, workers=1, **env) as fleet:
        try:
            res = await Producer(redis, s).enqueue(jobs, batch="q1")
            await wait_batch(s, redis, "q1", timeout=60)
            r = [await load_result(redis, s.keys, j) for j in res.job_ids]
            assert all(x is not None for x in r)
            bad_json, truncated, refused, agree, differ, on_top = r  # type: ignore[misc]
            assert bad_json.status == "done" and bad_json.tier is Tier.sonnet
            assert [a.status for a in bad_json.attempts] == ["check_failed", "ok"]
            assert "json" in (bad_json.attempts[0].error or "")
            assert bad_json.attempts[0].cost.total_pusd > 0  # the failed cheap answer is billed too
            assert bad_json.cost.total_pusd == sum(a.cost.total_pusd for a in bad_json.attempts)
            assert orjson.loads(bad_json.output or "")["label"]
            assert truncated.status == "done" and truncated.attempts[0].stop_reason == "max_tokens"
            assert refused.status == "failed" and refused.error_type == "check_failed"
            assert [a.tier for a in refused.attempts] == [Tier.haiku, Tier.sonnet]  # bounded by max_tier
            assert agree.tier is Tier.haiku and differ.tier is Tier.haiku
            rep = await batch_report(redis, s.keys, "q1")
            assert rep["cost_pusd"] == sum(x.cost.total_pusd for x in r)  # type: ignore[union-attr]
            # shadow runs land on the shadow queue and are compared with the top tier's answers
            cli = [sys.executable, "-m", "worker.cli"]
            env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
            q: dict[str, Any] = {}
            for _ in range(150):
                q = orjson.loads(
                    subprocess.run([*cli, "quality", "--json"], capture_output=True, env=env).stdout
                )
                if q["overall"]["total"] >= 5:  # five jobs were done with a haiku answer first
                    break
                await asyncio.sleep(0.2)
            # an escalated job is labelled by its first, cheapest answer (the one its check scored):
            # the bad-JSON haiku label disagrees, next to the two kept haiku answers
            assert q["by"]["classify:haiku"] == {"agree": 1, "total": 4, "rate": 0.25}, q
            assert on_top.tier is Tier.opus
            calls = orjson.loads(urllib.request.urlopen(f"{fleet.api_url}/_stats", timeout=10).read())["jobs"]
            assert calls.get(f"{on_top.job_id}.shadow", 0) == 0  # opus's answer was already paid for
            assert calls[f"{agree.job_id}.shadow"] == 1  # a kept haiku answer: one opus call
            out = tmp_path / "labels.csv"
            p = subprocess.run(
                [*cli, "router", "export-labels", "--out", str(out)], capture_output=True, env=env
            )
            assert p.returncode == 0, p.stderr
            rows = {row["prompt"]: row for row in csv.DictReader(out.open())}
            assert rows[jobs[3].prompt]["weak_correct"] == "True"
            assert rows[jobs[4].prompt]["weak_correct"] == "False"
            assert {row["domain"] for row in rows.values()} == {"classify", "summarize"}
            assert q["by"]["summarize:haiku"]["total"] == 1 and "summarize:sonnet" not in q["by"]
        finally:
            await redis.aclose()
