"""Quality monitoring: re-run a sample of below-top answers on the top tier and compare.

A job whose first answer came from Haiku or Sonnet is shadowed with probability ``ROUTEQ_SHADOW_RATE``
(a stable hash of its id, so re-runs agree); the label is about that first (in a cascade, cheapest)
answer. Shadow runs have their own low-priority queue and puller (two slots a
process), take top-tier slots only when one is free right now (they never wait in line ahead of real
work), and stop once their spend reaches ``ROUTEQ_SHADOW_BUDGET_USD``. Agreement per task and tier feeds
``routeq quality`` and, through ``routeq router export-labels``, the router's training data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any

from jobs.connections import aw
from jobs.contract import Job
from jobs.documents.store import MissingDocument, load_documents
from jobs.keys import SHADOW_COST_FIELD
from jobs.results import Attempt, usd_float
from jobs.serialization import queue_arq_job
from jobs.tiers import TOP_TIER
from worker.fleet import quality
from worker.fleet.admission import Admission, Refusal
from worker.fleet.store import paid_answer
from worker.pipeline.call import call
from worker.policy import cache_layout, grading, pricing
from worker.policy.answer_checks import signals_for
from worker.runtime import Runtime

log = logging.getLogger("routeq.shadow")

SHADOW_FUNCTION = "shadow_job"
SHADOW_SLOTS = 2
_ANSWERED = frozenset({"ok", "escalated", "check_failed"})
# How long a shadow run keeps trying for a free top-tier slot before giving up on this sample.
SLOT_PATIENCE_S = 120.0


def cheapest_answered(attempts: Sequence[Attempt]) -> Attempt | None:
    """The job's first paid answer: in a cascade the cheapest one, the answer its check scored."""
    return next((a for a in attempts if a.status in _ANSWERED), None)


async def maybe_shadow(
    rt: Runtime, job: Job, attempts: Sequence[Attempt], final: Attempt, final_text: str
) -> bool:
    """Sample the job for a shadow check of its cheapest answer against the top tier's.

    The label must be about the answer the cascade's check scored (its first), not the answer kept in
    the end: labels of kept answers only would never show the check's misses or its needless
    escalations. When the job itself ended on the top tier, that answer is the reference already and
    the shadow run pays only for grading."""
    s = rt.settings
    first = cheapest_answered(attempts) or final
    if first.tier == TOP_TIER or not grading.should_shadow(job.job_id, s.shadow_rate):
        return False
    if await _spent(rt) >= s.shadow_budget_usd:
        return False
    cheap_text = final_text if first.n == final.n else await _paid_text(rt, job, first.n)
    if cheap_text is None:
        return False
    top_text = final_text if final.tier == TOP_TIER and first.n != final.n else None
    async with rt.redis.pipeline(transaction=True) as p:
        queue_arq_job(
            p,
            queue=rt.keys.shadow_queue,
            job_id=f"{job.job_id}.shadow",
            function=SHADOW_FUNCTION,
            args=[job.to_wire(), first.tier.value, cheap_text, top_text],
            kwargs={},
            expiry_ms=s.job_expiry_s * 1000,
            now_ms=int(time.time() * 1000),
        )
        await p.execute()
    return True


async def _paid_text(rt: Runtime, job: Job, n: int) -> str | None:
    answer = paid_answer(await aw(rt.redis.hget(rt.keys.calls(job.job_id), str(n))))
    text = answer.get("text") if answer is not None else None
    return text if isinstance(text, str) else None


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
        await asyncio.sleep(next_try_in(got, delay))
        delay = min(delay * 2, 5.0)
    return None


def next_try_in(refusal: Refusal, backoff_s: float) -> float:
    """How long a shadow run waits before asking for a top-tier slot again. A full tier's retry_in_s is
    its earliest lease deadline (up to ROUTEQ_LEASE_TTL_S away) while a slot is usually released long
    before, so there the backoff alone decides; a cooldown or a token bucket's wait is exact."""
    if refusal.reason == "concurrency":
        return backoff_s
    return max(backoff_s, refusal.retry_in_s)


async def _top_answer(rt: Runtime, job: Job, prompt_job: Job) -> tuple[str, int] | None:
    s = rt.settings
    model, spec = s.model_for(TOP_TIER), s.spec_for(TOP_TIER)
    try:
        batch = prompt_job.tags.batch or "default"
        contents = await load_documents(rt.redis, rt.keys, batch, prompt_job.documents, rt.documents)
    except MissingDocument:  # the batch expired: nothing to compare against
        return None
    plan = cache_layout.build_request(prompt_job, model, spec, ttl=None, caching=False, contents=contents)
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
    await record_shadow_cost(rt, job, cost)
    return res.text, cost


async def record_shadow_cost(rt: Runtime, job: Job, cost_pusd: int) -> None:
    """Count a shadow call's spend fleet-wide (the shadow budget) and in its job's batch and tenant,
    whose reports show it beside the jobs' own cost."""
    async with rt.redis.pipeline(transaction=False) as p:
        p.hincrby(rt.keys.quality, SHADOW_COST_FIELD, cost_pusd)
        p.hincrby(rt.keys.batch_agg(job.tags.batch or "default"), SHADOW_COST_FIELD, cost_pusd)
        p.hincrby(rt.keys.tenant_agg(job.tags.tenant), SHADOW_COST_FIELD, cost_pusd)
        await p.execute()


async def shadow_job(
    ctx: dict[str, Any], payload: Any, cheap_tier: str, cheap_answer: str, top_text: str | None = None
) -> str:
    """Compare a cheap answer with the top tier's (``top_text`` when the job already paid for it)."""
    rt: Runtime = ctx["routeq"]
    job = Job.from_wire(payload)
    if await _spent(rt) >= rt.settings.shadow_budget_usd:
        return "over budget"
    top = (top_text, 0) if top_text is not None else await _top_answer(rt, job, job)
    if top is None:
        return "skipped"
    verdict = grading.compare(job.task, cheap_answer, top[0])
    how = "compare"
    if verdict is None:
        grader = job.model_copy(
            update={
                "prompt": grading.grading_prompt(job.task, job.prompt, top[0], cheap_answer),
                "documents": (),
                "output": job.output.model_copy(update={"type": "text", "json_schema": None}),
                "max_output_tokens": 300,
            }
        )
        graded = await _top_answer(rt, job, grader)
        if graded is None:
            return "skipped"
        verdict, how = grading.parse_grade(graded[0]), "graded"
    # The cheap answer's check signals (numbers only) make the label usable for calibration.
    signals, _ = signals_for(
        job.task.value,
        job.prompt,
        cheap_answer,
        [d.text for d in job.documents if d.text is not None],
        job.output,
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
