"""Quality monitoring: re-run a sample of below-top answers on the top tier and compare.

A job answered by Haiku or Sonnet is shadowed with probability ``ROUTEQ_SHADOW_RATE`` (a stable hash of
its id, so re-runs agree). Shadow runs have their own low-priority queue and puller (two slots a
process), take top-tier slots only when one is free right now (they never wait in line ahead of real
work), and stop once their spend reaches ``ROUTEQ_SHADOW_BUDGET_USD``. Agreement per task and tier feeds
``routeq quality`` and, through ``routeq router export-labels``, the router's training data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from jobs.connections import aw
from jobs.contract import Job
from jobs.results import usd_float
from jobs.tiers import TOP_TIER, Tier
from worker import cache, pricing, quality
from worker.limits import Admission, Refusal
from worker.llm import call
from worker.policy.answer_checks import signals_for
from worker.runtime import Runtime

log = logging.getLogger("routeq.shadow")

SHADOW_FUNCTION = "shadow_job"
SHADOW_COST_FIELD = "shadow_cost_pusd"
SHADOW_SLOTS = 2
# How long a shadow run keeps trying for a free top-tier slot before giving up on this sample.
SLOT_PATIENCE_S = 120.0


async def maybe_shadow(rt: Runtime, job: Job, tier: Tier, answer: str) -> bool:
    s = rt.settings
    if tier == TOP_TIER or not quality.should_shadow(job.job_id, s.shadow_rate):
        return False
    if await _spent(rt) >= s.shadow_budget_usd:
        return False
    await rt.redis.enqueue_job(
        SHADOW_FUNCTION,
        job.to_wire(),
        tier.value,
        answer,
        _job_id=f"{job.job_id}.shadow",
        _queue_name=rt.keys.shadow_queue,
        _expires=s.job_expiry_s,
    )
    return True


async def _spent(rt: Runtime) -> float:
    raw = await aw(rt.redis.hget(rt.keys.quality, SHADOW_COST_FIELD))
    return usd_float(int(raw or 0))


async def _free_slot(rt: Runtime, est_in: int, est_out: int) -> Admission | None:
    """A top-tier slot only if one is free now; real jobs, woken by events, win every race for it."""
    deadline = asyncio.get_running_loop().time() + SLOT_PATIENCE_S
    delay = 0.2
    while asyncio.get_running_loop().time() < deadline:
        got = await rt.gate.try_admit(TOP_TIER, est_in, est_out)
        if isinstance(got, Admission):
            return got
        assert isinstance(got, Refusal)
        await asyncio.sleep(max(delay, got.retry_in_s))
        delay = min(delay * 2, 5.0)
    return None


async def _top_answer(rt: Runtime, job: Job, prompt_job: Job) -> tuple[str, int] | None:
    s = rt.settings
    model, spec = s.model_for(TOP_TIER), s.spec_for(TOP_TIER)
    plan = cache.build_request(prompt_job, model, spec, ttl=None, caching=False)
    adm = await _free_slot(rt, plan.estimated_input_tokens, prompt_job.max_output_tokens)
    if adm is None:
        return None
    try:
        res = await call(rt.client, plan.params, job_id=f"{job.job_id}.shadow")
    except Exception as e:  # a failed sample is skipped, never retried at any cost
        await adm.release(0, 0)
        log.info("shadow run of %s failed: %s", job.job_id, type(e).__name__)
        return None
    await adm.release_usage(res.usage)
    cost = pricing.price_call(spec, res.usage, dt.datetime.now(dt.UTC).date()).total_pusd
    await aw(rt.redis.hincrby(rt.keys.quality, SHADOW_COST_FIELD, cost))
    return res.text, cost


async def shadow_job(ctx: dict[str, Any], payload: Any, cheap_tier: str, cheap_answer: str) -> str:
    rt: Runtime = ctx["routeq"]
    job = Job.from_wire(payload)
    if await _spent(rt) >= rt.settings.shadow_budget_usd:
        return "over budget"
    top = await _top_answer(rt, job, job)
    if top is None:
        return "skipped"
    verdict = quality.compare(job.task, cheap_answer, top[0])
    how = "compare"
    if verdict is None:
        grader = job.model_copy(
            update={
                "prompt": quality.grading_prompt(job.task, job.prompt, top[0], cheap_answer),
                "documents": (),
                "output": job.output.model_copy(update={"type": "text", "json_schema": None}),
                "max_output_tokens": 300,
            }
        )
        graded = await _top_answer(rt, job, grader)
        if graded is None:
            return "skipped"
        verdict, how = quality.parse_grade(graded[0]), "graded"
    # The cheap answer's check signals (numbers only) make the label usable for calibration.
    signals, _ = signals_for(
        job.task.value, job.prompt, cheap_answer, [d.text for d in job.documents], job.output
    )
    await quality.record_comparison(
        rt.redis,
        rt.keys,
        job.task,
        cheap_tier,
        verdict,
        {"prompt": job.prompt, "job_id": job.job_id, "how": how, "check_signals": signals},
    )
    return "agree" if verdict else "disagree"
