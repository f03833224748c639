"""The cascade: the keep-or-escalate decision (pure), and cascade jobs through real worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.connections import connect
from jobs.contract import Job, scoped_id
from jobs.producer import Producer
from jobs.reports import batch_report, render_report
from jobs.results import JobResult
from jobs.settings import Settings
from jobs.tiers import Tier
from tests.helpers import Fleet, wait_batch
from worker.policy.answer_checks import CheckScore
from worker.policy.cascade import decide

LOW, HIGH, HARD = CheckScore(0.1), CheckScore(0.9), CheckScore(1.0, ["failed check: empty"], ("empty",))


def _decide(check: CheckScore, strategy: str = "cascade", tier: Tier = Tier.haiku, **kw: object) -> str:
    args: dict[str, object] = {
        "strategy": strategy,
        "check": check,
        "tier": tier,
        "ceiling": Tier.opus,
        "threshold": 0.5,
        "escalations": 0,
        "max_escalations": 2,
    }
    args.update(kw)
    return decide(**args).action  # type: ignore[arg-type]


def test_high_score_escalates_low_score_keeps() -> None:
    assert _decide(HIGH) == "escalate"
    assert _decide(LOW) == "keep"
    assert _decide(CheckScore(0.5)) == "escalate"  # at the threshold goes up


def test_route_strategy_escalates_only_hard_failures() -> None:
    assert _decide(HIGH, strategy="route") == "keep"
    assert _decide(HARD, strategy="route") == "escalate"


def test_ceiling_and_escalation_limit_are_respected() -> None:
    assert _decide(HIGH, ceiling=Tier.haiku) == "keep"
    assert _decide(HIGH, tier=Tier.opus) == "keep"
    assert _decide(HIGH, escalations=2) == "keep"
    assert _decide(HIGH, escalation=False) == "keep"
    assert _decide(HARD, ceiling=Tier.haiku) == "fail"


PROBLEM_BAD = "Ann buys 4 boxes of 6 pens and gives away 5 pens. How many pens does she keep?"
PROBLEM_OK = "Ben has 3 bags with 12 apples each. He eats 5 apples. How many apples are left?"
PROBLEM_CAP = "Cat reads 7 pages a day for 9 days and then 4 more pages. How many pages did she read?"
WRONG = "She buys 4 * 6 = 26 pens, and then she gives away some of them so she has about"
RIGHT_PENS = "She buys 4 * 6 = 24 pens. She gives away 5, so 24 - 5 = 19. The answer is 19."
RIGHT_APPLES = "Ben has 3 * 12 = 36 apples. After eating 5 he has 36 - 5 = 31. The answer is 31."
WRONG_PAGES = "She reads 7 * 9 = 56 pages, so approximately"


def _replay(tmp_path: Path) -> Path:
    rows = [
        {"prompt": PROBLEM_BAD, "answers": {"haiku": WRONG, "sonnet": RIGHT_PENS, "opus": RIGHT_PENS}},
        {
            "prompt": PROBLEM_OK,
            "answers": {"haiku": RIGHT_APPLES, "sonnet": RIGHT_APPLES, "opus": RIGHT_APPLES},
        },
        {"prompt": PROBLEM_CAP, "answers": {"haiku": WRONG_PAGES, "sonnet": "7 * 9 = 63, 63 + 4 = 67."}},
    ]
    path = tmp_path / "replay.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.integration
async def test_cascade_jobs_through_real_workers(redis_url: str, tmp_path: Path) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    jobs = [
        Job(id="bad", task="reason", prompt=PROBLEM_BAD),  # strategy from ROUTEQ_STRATEGY__REASON
        Job(id="ok", task="reason", prompt=PROBLEM_OK),
        Job(id="cap", task="reason", prompt=PROBLEM_CAP, constraints={"max_tier": "haiku"}),
        Job(
            id="routed", task="reason", prompt=PROBLEM_BAD, constraints={"strategy": "route", "tier": "haiku"}
        ),
    ]
    with Fleet(
        redis_url, workers=2, api_args=("--replay", str(_replay(tmp_path))), ROUTEQ_STRATEGY__REASON="cascade"
    ):
        await Producer(redis, s).enqueue(jobs, batch="cascade")
        st = await wait_batch(s, redis, "cascade", timeout=60)
        assert st["done"] == 4, st
        got = {
            j: JobResult.model_validate_json(await redis.get(s.keys.result(scoped_id("cascade", j))))
            for j in ("bad", "ok", "cap", "routed")
        }
        rep = await batch_report(redis, s.keys, "cascade")
    await redis.aclose()

    bad = got["bad"]
    assert bad.route is not None and bad.route.strategy == "cascade" and bad.route.tier == Tier.haiku
    assert [a.tier for a in bad.attempts] == [Tier.haiku, Tier.sonnet]
    first, kept = bad.attempts
    assert first.status == "escalated" and first.check_score is not None and first.check_score >= 0.28
    assert first.check_reasons and first.check_signal
    assert kept.status == "ok" and kept.check_score is not None and kept.check_score < 0.5
    assert bad.output == RIGHT_PENS and bad.tier == Tier.sonnet
    # the discarded cheap answer is billed: the job's cost is the sum of both paid calls
    assert first.cost.total_pusd > 0
    assert bad.cost.total_pusd == first.cost.total_pusd + kept.cost.total_pusd

    ok = got["ok"]
    assert [a.tier for a in ok.attempts] == [Tier.haiku] and ok.output == RIGHT_APPLES
    assert ok.attempts[0].check_score is not None and ok.attempts[0].check_score < 0.28

    cap = got["cap"]
    assert [a.tier for a in cap.attempts] == [Tier.haiku] and cap.output == WRONG_PAGES
    assert cap.attempts[0].check_score is not None and cap.attempts[0].check_score >= 0.28

    routed = got["routed"]
    assert routed.route is not None and routed.route.strategy == "route"
    assert [a.tier for a in routed.attempts] == [Tier.haiku] and routed.output == WRONG

    assert rep["escalated"] == 1 and sum(rep["escalated_why"].values()) == 1
    assert rep["cost_pusd"] == sum(r.cost.total_pusd for r in got.values())
    assert "escalated" in render_report(rep)
