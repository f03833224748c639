"""Shadow-quality helpers: sampling, comparison, grading text, Redis bookkeeping, label export."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import fakeredis
import pytest

from jobs.contract import TaskType
from jobs.keys import Keys
from jobs.tiers import Tier
from worker.fleet.admission import Refusal
from worker.fleet.quality import export_labels, quality_report, record_comparison
from worker.pipeline.shadow import next_try_in
from worker.policy.grading import compare, grading_prompt, parse_grade, should_shadow


def test_should_shadow_is_deterministic_and_near_rate() -> None:
    ids = [f"job-{i}" for i in range(5000)]
    picked = [should_shadow(i, 0.1) for i in ids]
    assert picked == [should_shadow(i, 0.1) for i in ids]
    assert 0.08 < sum(picked) / len(ids) < 0.12
    assert not any(should_shadow(i, 0.0) for i in ids[:100])
    assert all(should_shadow(i, 1.0) for i in ids[:100])
    # Raising the rate only adds jobs (same hash threshold), so samples nest.
    assert all(should_shadow(i, 0.2) for i, p in zip(ids, picked, strict=True) if p)


def test_compare_closed_and_structured_tasks() -> None:
    assert compare(TaskType.classify, "Positive.", "  positive ") is True
    assert compare(TaskType.classify, "positive", "negative") is False
    assert compare(TaskType.extract, '{"a": 1, "b": [2]}', '```json\n{"b": [2], "a": 1}\n```') is True
    assert compare(TaskType.extract, '{"a": 1}', '{"a": 2}') is False
    assert compare(TaskType.extract, "Alice Smith", "Smith, Alice") is None


def test_compare_open_tasks_need_grading() -> None:
    assert compare(TaskType.summarize, "A short summary.", "a short summary") is True
    assert compare(TaskType.summarize, "One summary.", "Another summary.") is None
    assert compare(TaskType.qa, '{"x": 1}', '{"x": 2}') is None


def test_maths_answers_with_stated_final_numbers_are_compared_without_grading() -> None:
    cheap = "4 * 6 = 24 pens, minus 5 is 19.\n#### 19"
    top = "She buys 4 * 6 = 24 pens and gives away 5, so she keeps $19.00.\n\nThe answer is 19.00."
    wrong = "4 * 6 = 24 pens, minus 5 is 18. Therefore she keeps 18 pens."
    assert compare(TaskType.reason, cheap, top) is True  # same number, different words and format
    assert compare(TaskType.reason, wrong, top) is False
    assert compare(TaskType.reason, "The answer is 1,200.", "Thus the total is $1200") is True
    # no marked final number on one side: an intermediate step may be last, so it is graded
    assert compare(TaskType.reason, "4 * 6 = 24, and 24 - 5 = 19", top) is None
    assert compare(TaskType.reason, "I am not sure how to do this.", top) is None
    # only maths is compared by number: a summary ending on a different figure is graded
    assert compare(TaskType.summarize, "In total 19 pens.", "In total 18 pens.") is None


def test_maths_number_compare_agrees_with_recorded_correctness_on_gsm8k() -> None:
    """Where both answers state a final number, the verdict matches what the recorded correctness says
    (both right -> agree, one right -> disagree) on nearly every pair, and decides a good share."""
    data = Path(__file__).resolve().parents[2] / "shared/data/gsm8k-cascade-dev/gsm8k_dev.csv"
    if not data.exists():
        pytest.skip("shared GSM8K data not present")
    rows = list(csv.DictReader(data.open(encoding="utf-8")))
    decided = wrong = 0
    for r in rows:
        got = compare(TaskType.reason, r["weak_response"], r["strong_response"])
        weak, strong = r["weak_correct"] == "True", r["strong_correct"] == "True"
        if got is None or not (weak or strong):
            continue  # both wrong: either verdict can be right
        decided += 1
        wrong += got != (weak and strong)
    assert decided > 0.4 * len(rows)
    assert wrong / decided < 0.04  # the misses are the recorded grading misreading "$20.00" and kin


def test_shadow_run_waits_for_a_full_tier_by_backoff_not_the_lease_deadline() -> None:
    full = Refusal(Tier.opus, "concurrency", retry_in_s=29.5, holders=4, limit=4)
    assert next_try_in(full, 0.2) == 0.2  # a slot is usually free long before the oldest lease ends
    cooling = Refusal(Tier.opus, "cooldown", retry_in_s=7.0, holders=0, limit=4)
    assert next_try_in(cooling, 0.2) == 7.0  # exact: no slot before the cooldown ends
    assert next_try_in(Refusal(Tier.opus, "rpm", retry_in_s=0.05, holders=0, limit=None), 0.4) == 0.4


def test_grading_prompt_and_parse() -> None:
    text = grading_prompt(TaskType.qa, "What is 2+2?", "4", "four")
    assert "What is 2+2?" in text and "<candidate_answer>\nfour" in text and "VERDICT" in text
    assert parse_grade("Both say four.\nVERDICT: AGREE") is True
    assert parse_grade("verdict: disagree") is False
    assert parse_grade("VERDICT: AGREE ... on reflection VERDICT: DISAGREE") is False
    assert parse_grade("I think they match.") is False


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


async def test_record_and_report(redis: fakeredis.FakeAsyncRedis) -> None:
    keys = Keys("t")
    await record_comparison(redis, keys, TaskType.classify, "haiku", True, {"prompt": "p1"})
    await record_comparison(redis, keys, TaskType.classify, "haiku", False, {"prompt": "p2"})
    await record_comparison(redis, keys, TaskType.qa, "sonnet", True, {"prompt": "p3"})
    assert await redis.hget(keys.quality, "classify:haiku:total") == b"2"
    rep = await quality_report(redis, keys)
    assert rep["by"]["classify:haiku"] == {"agree": 1, "total": 2, "rate": 0.5}
    assert rep["by"]["qa:sonnet"]["rate"] == 1.0
    assert rep["overall"] == {"agree": 2, "total": 3, "rate": pytest.approx(2 / 3)}
    assert rep["labels"] == 3


async def test_labels_are_capped(redis: fakeredis.FakeAsyncRedis) -> None:
    keys = Keys("t")
    for i in range(5):
        await record_comparison(redis, keys, TaskType.qa, "haiku", True, {"prompt": f"p{i}"}, max_labels=3)
    assert await redis.llen(keys.quality_labels) == 3
    out = io.StringIO()
    assert await export_labels(redis, keys, out) == 3
    assert [r["prompt"] for r in csv.DictReader(io.StringIO(out.getvalue()))] == ["p2", "p3", "p4"]


async def test_export_labels_trains(redis: fakeredis.FakeAsyncRedis, tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    from worker.routerlab.train import read_rows, train

    keys = Keys("t")
    await redis.rpush(keys.quality_labels, b"not json")  # skipped, not fatal
    for i in range(30):
        task = TaskType.classify if i % 2 else TaskType.summarize
        await record_comparison(redis, keys, task, "haiku", i % 3 != 0, {"prompt": f"Question {i}" * (i + 1)})
    await record_comparison(redis, keys, TaskType.qa, "haiku", True, {"no_prompt": 1})  # skipped
    out = tmp_path / "labels.csv"
    assert await export_labels(redis, keys, out) == 30
    rows = read_rows(out)
    assert {r.domain for r in rows} == {"classify", "summarize"}
    assert all(r.strong_correct for r in rows)
    assert sum(not r.weak_correct for r in rows) == 10
    model = train(out, tmp_path / "m.json", cv=True)
    assert model["metadata"]["training_data"]["rows"] == 30
    assert "attribution" not in model["metadata"]
