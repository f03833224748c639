from __future__ import annotations

from jobs.contract import Job
from jobs.tiers import Tier
from worker.policy.router import Thresholds, decide

T = Thresholds(sonnet=0.4, opus=0.7)


def job(**kw: object) -> Job:
    return Job.model_validate({"task": "qa", "prompt": "What is the capital of France?", **kw})


def test_task_type_sets_the_base() -> None:
    assert decide(job(task="classify")).tier is Tier.haiku
    assert decide(job(task="reason", prompt="Plan the week.")).tier is Tier.opus
    assert decide(job(task="code", prompt="Print hello")).tier is Tier.sonnet


def test_signals_move_the_tier_up() -> None:
    plain = decide(job(task="qa", prompt="Tell me about Paris."))
    cued = decide(
        job(task="qa", prompt="Analyze and compare, step by step, why the proof fails; justify it.")
    )
    assert cued.score > plain.score
    assert cued.tier.rank > plain.tier.rank
    assert "reasoning cues" in cued.reason


def test_long_context_counts() -> None:
    small = decide(job(task="summarize"))
    big = decide(job(task="summarize", documents=[{"name": "d", "text": "word " * 60_000}]))
    assert big.score > small.score
    assert big.signals["est_tokens"] > 50_000


def test_constraints_bound_the_decision() -> None:
    capped = decide(job(task="reason", prompt="Prove it step by step", constraints={"max_tier": "haiku"}))
    assert capped.tier is Tier.haiku and "bounded" in capped.reason
    floored = decide(job(task="classify", constraints={"min_tier": "opus"}))
    assert floored.tier is Tier.opus
    pinned = decide(job(task="reason", constraints={"tier": "sonnet"}))
    assert pinned.tier is Tier.sonnet and "pinned" in pinned.reason


def test_learned_score_moves_within_the_frame() -> None:
    low = decide(job(task="qa"), learned_score=0.1, thresholds=T)
    high = decide(job(task="qa"), learned_score=0.95, thresholds=T)
    assert low.tier is Tier.haiku
    assert high.tier is Tier.opus
    assert high.learned_score == 0.95 and "learned" in high.reason
    # classify's frame stops at sonnet whatever the learned score says
    assert decide(job(task="classify"), learned_score=0.99, thresholds=T).tier is Tier.sonnet


def test_rules_keep_a_floor_under_the_learned_score() -> None:
    heavy = job(task="reason", prompt="Derive and prove step by step; analyze trade-offs; justify.")
    rec = decide(heavy, learned_score=0.0, thresholds=T)
    assert rec.base_tier is Tier.opus
    assert rec.tier is Tier.sonnet  # one below the rule pick, not haiku


def test_learned_score_picks_the_tier_within_the_frame() -> None:
    j = job(task="synthesize", prompt="Summarise these notes in two lines.")
    picked = {score: decide(j, score, T).tier for score in (0.1, 0.5, 0.9)}
    assert picked == {0.1: Tier.haiku, 0.5: Tier.sonnet, 0.9: Tier.opus}
    assert "learned 0.90 -> opus" in decide(j, 0.9, T).reason
