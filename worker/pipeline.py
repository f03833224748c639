"""What happens to one job: route, plan, admit, call, price, check, escalate or retry, record.

``process_job`` is the arq function. On the intake queue it never waits for a saturated tier: the job is
parked on that tier's own queue and the intake slot goes to the next job, so a busy Opus cannot stall
Haiku work. On a tier queue the job waits for its slot (only that tier's pullers are blocked).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from typing import Any

from arq import Retry
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.contract import Job
from jobs.documents.store import MissingDocument
from jobs.keys import JOB_FUNCTION
from jobs.results import Attempt, AttemptStatus, Cost, JobResult, JobStatus, RouteRecord
from jobs.serialization import CORRUPT_MARK, queue_arq_job
from jobs.sources import explain
from jobs.tiers import TIER_ORDER, TOP_TIER, Tier
from worker import cache, pricing, retry, router, tracing
from worker.attempt import AttemptScope
from worker.batches import gather as batches
from worker.budget import Reservation, token_for
from worker.cache import WarmDecision
from worker.checks import NotJSON, parse_json_output
from worker.limits import Admission, AdmissionTimeout, Refusal
from worker.llm import CallResult, call
from worker.logsafe import exception_summary
from worker.outcome import build_result, dead_letter
from worker.planning import RequestPlanner
from worker.policy import cascade
from worker.policy.answer_checks import CheckScore, score_answer
from worker.runtime import Runtime
from worker.scripts import WriteBatch
from worker.shadow import maybe_shadow
from worker.store import persist

log = logging.getLogger("routeq.pipeline")

# How often a job held by a budget cap (ROUTEQ_BUDGET_ACTION=hold) is tried again.
HOLD_RETRY_S = 60
_AUTH_LOGGED: set[str] = set()  # worker processes that have said their API key was rejected


class Parked(Exception):
    """The job moved to a tier queue; this run is over without an outcome."""


class InBatch(Exception):
    """The request went to a Message Batch; its outcome is recorded when the result is ingested."""


class Stopped(Exception):
    """The run recorded its outcome early (e.g. refused by a budget)."""


async def process_job(
    ctx: dict[str, Any], payload: Any, parked: str | None = None, fresh_from: int = 0
) -> str:
    rt: Runtime = ctx["routeq"]
    arq_id: str = ctx["job_id"]
    job_try: int = ctx.get("job_try", 1)
    job = await _parse(rt, arq_id, payload)
    if job is None:
        return "invalid"
    queue = rt.keys.tier_queue(parked) if parked else rt.keys.intake_queue
    with tracing.attempt_span(job, job_try, queue):
        run = JobRun(rt, job, job_try, Tier(parked) if parked else None, payload, fresh_from)
        if isinstance(ctx.get("enqueue_time"), dt.datetime):
            run.enqueued_at = ctx["enqueue_time"].timestamp()
        try:
            return await run.run()
        except Parked:
            return "parked"
        except InBatch:
            return "in_batch"
        except Stopped:
            return "stopped"
        except Retry:
            raise
        except (RedisConnectionError, RedisTimeoutError) as e:
            # Redis stayed away longer than the client's reconnect backoff: hand the job back to arq
            # (re-run later) instead of failing it with no recorded outcome. Paid answers are persisted.
            log.warning("job %s: redis unavailable (%s); handing it back", job.job_id, e)
            raise Retry(defer=2) from e
        except Exception as e:
            # A bug must not make arq drop the job with no outcome: fail it with a dead letter instead.
            log.error("job %s: unexpected error: %s", job.job_id, exception_summary(e))
            return await run.finish_failed(None, "internal", f"internal error: {type(e).__name__}: {e}")


async def _parse(rt: Runtime, arq_id: str, payload: Any) -> Job | None:
    """A payload damaged in Redis fails that job with a clear error; the worker carries on."""
    if isinstance(payload, dict) and CORRUPT_MARK in payload:
        reason = str(payload[CORRUPT_MARK])
    else:
        try:
            return Job.from_wire(payload)
        except ValidationError as e:
            reason = f"payload in Redis is not a valid job: {explain(e)}"
        except Exception as e:
            reason = f"payload in Redis is not a valid job: {e}"
    job_id = arq_id.split(".")[0]
    batch = tenant = "unknown"
    if isinstance(payload, dict):
        tags = payload.get("tags")
        if isinstance(tags, dict):
            batch = str(tags.get("batch") or batch)
            tenant = str(tags.get("tenant") or tenant)
    log.error("job %s: invalid payload in Redis (the reason is in its result)", job_id)
    result = JobResult(
        job_id=job_id,
        batch=batch,
        tenant=tenant,
        task=str(payload.get("task", "?")) if isinstance(payload, dict) else "?",
        status="failed",
        error=reason,
        error_type="invalid_payload",
        finished_at=time.time(),
    )
    await rt.store.record(result, dead_cause={"error_type": "invalid_payload", "error": reason})
    rt.metrics.observe_result(result)
    return None


class JobRun:
    def __init__(
        self, rt: Runtime, job: Job, job_try: int, parked: Tier | None, wire: Any = None, fresh_from: int = 0
    ) -> None:
        self.rt = rt
        # `routeq retry` gives the job a new attempt budget: attempts before this index stay in its trace
        # (and its bill) but no longer count toward max_attempts.
        self.fresh_from = fresh_from
        self.wire = wire if wire is not None else job.to_wire()  # the payload as enqueued, to park as is
        self.s = rt.settings
        self.job = job
        self.job_id = job.job_id
        self.batch = job.tags.batch or "default"
        self.job_try = job_try
        self.parked = parked
        self.today = dt.datetime.now(dt.UTC).date()
        self.attempts: list[Attempt] = []
        self.planner = RequestPlanner(rt, job, self.batch, self.today)
        self.strategy = self.s.strategy_for(job.task, job.constraints.strategy)
        self.enqueued_at = time.time()  # arq's enqueue time when known: durations count from it

    # ------------------------------------------------------------------------------------------------
    async def run(self) -> str:
        done, self.attempts, paid = await self.rt.store.load_state(self.job)
        if done:
            return "duplicate"
        route = self.route()
        last = self.attempts[-1] if self.attempts else None
        if last is not None and last.status == "ok" and last.n in paid:
            # The answer was paid for before a crash; record it instead of calling again.
            answer = paid[last.n]
            return await self.finish_done(route, last, answer["text"], answer.get("stop_reason"))
        tier = self.parked or (last.tier if last is not None else route.tier)
        if self.parked is None and last is not None and last.status == "escalated":
            tier = Tier(last.tier.next_up() or last.tier)  # the discarded answer is paid; go on up
        return await self.loop(route, tier)

    def route(self) -> RouteRecord:
        with tracing.route_span() as span:
            learned = None
            if self.rt.scorer is not None and self.s.learned_router:
                learned = round(self.rt.scorer.score(self.job.prompt + "\n" + (self.job.system or "")), 4)
            rec = router.decide(self.job, learned, self.rt.thresholds)
            self.strategy = self.s.strategy_for(self.job.task, self.job.constraints.strategy)
            if self.strategy == "cascade":
                low = self.job.constraints.low
                rec = rec.model_copy(
                    update={
                        "tier": low,
                        "strategy": "cascade",
                        "reason": f"cascade: starts at {low.value}, the cheapest allowed tier",
                    }
                )
            tracing.set_route(span, rec)
        return rec

    async def loop(self, route: RouteRecord, tier: Tier) -> str:
        ceiling = self.job.constraints.high
        escalations = sum(1 for a in self.attempts if a.status in ("check_failed", "escalated"))
        overloads = 0
        errors = sum(
            1
            for a in self.attempts[self.fresh_from :]
            if a.status == "error" and retry.spends_attempt(a.error_type)
        )
        while True:
            if self.parked is None and self.job_mode() != "realtime":
                deadline_at = batches.deadline_of(self)
                if batches.route_now(self, deadline_at) == "batch":
                    refused = await batches.gather(self, route, tier, deadline_at)
                    if isinstance(refused, bool):
                        raise InBatch()
                    if self.s.budget_action == "hold":
                        raise Retry(defer=60)
                    await self.finish_failed(None, "budget", refused.reason)
                    raise Stopped()
            if self.parked is None and self.rt.gate.waiting(tier):
                await self.park(tier)  # saturated (jobs of ours wait in its line): no need to plan first
            plan, ttl = await self.plan(tier)
            n = len(self.attempts) + 1
            writes = WriteBatch(self.rt.redis)
            fault: retry.Fault | None = None
            async with AttemptScope(self.rt) as scope:  # whatever ends the attempt gives back what it holds
                scope.leader = await self.warm_up(tier, plan, ttl)
                scope.admitted(await self.admit(tier, plan))
                scope.reservation = await self.reserve_budget(tier, plan, n, scope)
                t0 = time.perf_counter()
                try:
                    res, cost = await self.call(tier, plan, ttl)
                except Exception as e:
                    fault = retry.classify(e)
                    latency_ms = int((time.perf_counter() - t0) * 1000)
                else:
                    await scope.settle_into(writes, res, cost, plan, ttl)
            if fault is not None:
                await self.cool_down(tier, fault)
                attempt = Attempt(
                    n=n,
                    tier=tier,
                    model=self.s.model_for(tier),
                    status="error",
                    error_type=fault.kind,
                    error=fault.message,
                    latency_ms=latency_ms,
                    wait_ms=scope.wait_ms,
                    started_at=time.time(),  # as for an answer: stamped when the call ended
                )
                await self.save(attempt)
                if retry.spends_attempt(fault.kind):
                    errors += 1
                overloads = overloads + 1 if fault.escalatable else 0
                since = retry.outage_started_at([(a.error_type, a.started_at) for a in self.attempts])
                action = retry.next_action(
                    fault,
                    attempt=errors,
                    max_attempts=self.s.max_attempts,
                    consecutive_overloads=overloads,
                    escalate_on_overload=self.s.escalate_on_overload,
                    overload_escalate_after=self.s.overload_escalate_after,
                    can_escalate=tier.rank < ceiling.rank,
                    base_s=self.s.backoff_base_s,
                    max_s=self.s.backoff_max_s,
                    rng=self.rt.rng,
                    outage_s=0.0 if since is None else max(0.0, time.time() - since),
                    outage_patience_s=self.s.outage_patience_s,
                )
                if action.kind == "retry":
                    await asyncio.sleep(action.delay_s)
                    continue
                if action.kind == "escalate":
                    tier, overloads = Tier(tier.next_up() or tier), 0
                    continue
                return await self.finish_failed(route, fault.kind, action.message)
            # --- a paid answer: its slot, budget and cache writes go with its record, one round trip ---
            check = self.check(res.text, res.stop_reason)
            decision = cascade.decide(
                strategy=self.strategy,
                check=check,
                tier=tier,
                ceiling=ceiling,
                threshold=self.threshold(tier),
                escalations=escalations,
                max_escalations=self.s.max_escalations,
                escalation=self.s.escalation,
            )
            tracing.record_check(check.score, check.top_signal, decision.action, tier.value)
            failures = check.failed
            status: AttemptStatus = (
                "check_failed" if failures else "escalated" if decision.action == "escalate" else "ok"
            )
            attempt = Attempt(
                n=n,
                tier=tier,
                model=res.model,
                status=status,
                latency_ms=res.latency_ms,
                wait_ms=scope.wait_ms,
                usage=res.usage,
                cost=cost,
                stop_reason=res.stop_reason,
                request_id=res.request_id,
                started_at=time.time(),
                service_tier=res.service_tier,
                error=f"answer failed checks: {', '.join(failures)}" if failures else None,
                error_type="check_failed" if failures else None,
                check_score=round(check.score, 4),
                check_reasons=check.reasons,
                check_signal=check.top_signal,
            )
            await self.save(attempt, {"text": res.text, "stop_reason": res.stop_reason}, writes)
            if decision.action == "escalate":
                escalations += 1
                tier = Tier(tier.next_up() or tier)
                continue
            if decision.action == "fail":
                return await self.finish_failed(
                    route,
                    "check_failed",
                    attempt.error or "answer failed checks",
                    output=res.text,
                    stop_reason=res.stop_reason,
                )
            return await self.finish_done(route, attempt, res.text, res.stop_reason)

    def check(self, text: str | None, stop_reason: str | None) -> CheckScore:
        return score_answer(
            self.job.task.value,
            self.job.prompt,
            text,
            documents=self.planner.document_texts(),
            output=self.job.output,
            stop_reason=stop_reason,
            enabled=list(self.s.checks.get(self.job.task, [])),
            coefficients=self.rt.check_coefficients.get(self.job.task.value),
        )

    def threshold(self, tier: Tier) -> float:
        """The score at or above which this tier's answer escalates: calibrated, else the settings'."""
        calibrated = self.rt.cascade_thresholds.get(self.job.task.value, {})
        return calibrated.get(tier.value, self.s.cascade_thresholds.get(tier, 1.0))

    def job_mode(self) -> str:
        return self.job.constraints.mode or self.s.default_mode

    # ------------------------------------------------------------------------------------------------
    async def plan(self, tier: Tier) -> tuple[cache.RequestPlan, cache.Ttl | None]:
        try:
            return await self.planner.plan(tier)
        except MissingDocument as e:
            msg = f"document {e.name!r}: its stored content is gone from Redis (batch expired?)"
            await self.finish_failed(None, "document_missing", msg)
            raise Stopped() from None

    @property
    def cache_info(self) -> dict[str, Any]:
        return self.planner.cache_info

    async def warm_up(
        self, tier: Tier, plan: cache.RequestPlan, ttl: cache.Ttl | None
    ) -> WarmDecision | None:
        """Let one job per cold prefix go first; hold the others until its response has started.

        On the intake queue a follower is parked instead of waiting, so it holds no intake slot.
        """
        h = plan.warm_hash
        if not (self.s.cache_warming and h and ttl):
            return None
        ttl_s = cache.TTL_SECONDS[ttl]
        t0 = time.monotonic()
        d = await self.rt.warmer.claim(h, ttl_s)
        if d.kind == "follower":
            if self.parked is None:
                await self.park(tier)
            with tracing.wait_span("cache_warm", tier) as span:
                d = await self.rt.warmer.acquire(h, ttl_s, timeout_s=self.s.warm_wait_s)
                span.set_attribute("routeq.wait_ms", int((time.monotonic() - t0) * 1000))
                span.set_attribute("routeq.cache.warm_decision", d.kind)
        self.cache_info["warming"] = d.kind
        return d if d.kind == "leader" else None

    async def admit(self, tier: Tier, plan: cache.RequestPlan) -> Admission:
        # Uncached input and cache writes count toward input tokens/min; reads do not (as on the API).
        est_in, est_out = plan.estimated_input_tokens, self.job.max_output_tokens
        if self.parked is None:
            got = await self.rt.gate.try_admit(tier, est_in, est_out)
            if isinstance(got, Refusal):
                await self.park(tier)
            assert isinstance(got, Admission)
            return got
        with tracing.wait_span("tier_slot", tier) as span:
            try:
                adm = await self.rt.gate.admit(tier, est_in, est_out, timeout_s=self.s.job_timeout_s / 2)
            except AdmissionTimeout:
                # Hand the job back to its tier queue instead of letting arq time it out as a failure.
                raise Retry(defer=1) from None
            span.set_attribute("routeq.wait_ms", adm.wait_ms)
            span.set_attribute("routeq.wait.reason", ",".join(adm.waited_on) or "none")
            self.rt.metrics.observe_wait(tier, ",".join(adm.waited_on) or "none", adm.wait_ms / 1000.0)
        return adm

    async def park(self, tier: Tier) -> None:
        """Hand the job to the tier's own queue and free this intake slot.

        What ``enqueue_job`` writes, in one MULTI instead of its WATCH round trips. A re-run of an intake
        job parked before (its run died before arq's finish) finds the document there and adds nothing.
        """
        async with self.rt.redis.pipeline(transaction=True) as p:
            queue_arq_job(
                p,
                queue=self.rt.keys.tier_queue(tier),
                job_id=f"{self.job_id}.{tier.value}",
                function=JOB_FUNCTION,
                args=[self.wire],
                kwargs={"parked": tier.value, **({"fresh_from": self.fresh_from} if self.fresh_from else {})},
                expiry_ms=self.s.job_expiry_s * 1000,
                now_ms=int(time.time() * 1000),
            )
            await p.execute()
        self.parked = tier
        raise Parked()

    async def reserve_budget(
        self, tier: Tier, plan: cache.RequestPlan, n: int, scope: AttemptScope
    ) -> Reservation:
        """Reserve the call's worst case: concurrent jobs overspend a cap by at most their own bound."""
        spec = self.s.spec_for(tier)
        amount = pricing.max_cost(spec, plan.estimated_input_tokens, self.job.max_output_tokens, self.today)
        token = token_for(self.job_id, n)
        try:
            got = await self.rt.budgets.reserve_if_capped(self.job.tags.tenant, self.batch, amount, token)
        except ValueError:
            # A run killed after its call closed this token (settled or released) but before the attempt
            # reached Redis: this re-run's call is a new one and needs its own reservation.
            token = f"{token}:{uuid.uuid4().hex[:8]}"
            got = await self.rt.budgets.reserve_if_capped(self.job.tags.tenant, self.batch, amount, token)
        if isinstance(got, Reservation):
            return got
        await scope.release()
        if self.s.budget_action == "hold":
            # arq re-runs it later; raising a cap lets it through. Until then status counts it as held.
            again_ms = int((time.time() + HOLD_RETRY_S) * 1000)
            async with self.rt.redis.pipeline(transaction=False) as p:
                p.zadd(self.rt.keys.batch_held(self.batch), {self.job_id: again_ms})
                p.pexpire(
                    self.rt.keys.batch_held(self.batch), (self.s.job_expiry_s + self.s.result_ttl_s) * 1000
                )
                await p.execute()
            raise Retry(defer=HOLD_RETRY_S)
        await self.finish_failed(None, "budget", got.reason)
        raise Stopped()

    async def call(
        self, tier: Tier, plan: cache.RequestPlan, ttl: cache.Ttl | None
    ) -> tuple[CallResult, Cost]:
        """The model call in its GenAI span; returns the answer and its itemised cost (priced once)."""
        model, spec = self.s.model_for(tier), self.s.spec_for(tier)
        with tracing.genai_span(
            model,
            self.job.max_output_tokens,
            tier=tier,
            messages=plan.params["messages"],
            system=plan.params.get("system"),
            trace_content=self.s.trace_content,
        ) as span:
            try:
                with self.rt.metrics.track_inflight(tier):
                    res = await call(self.rt.client, plan.params, job_id=self.job_id, requested_ttl=ttl)
            except Exception as e:
                tracing.record_genai_error(span, retry.classify(e).kind)
                raise
            cost = pricing.price_response(spec, res.usage, self.today, res.service_tier)
            tracing.record_genai_result(
                span,
                response_model=res.model,
                response_id=res.message_id,
                usage=res.usage,
                finish_reason=res.stop_reason,
                cost_pusd=cost.total_pusd,
                baseline_cost_pusd=pricing.baseline_cost(self.s.spec_for(TOP_TIER), res.usage, self.today),
                tier=tier,
                output_text=res.text,
                trace_content=self.s.trace_content,
            )
        return res, cost

    async def cool_down(self, tier: Tier, fault: retry.Fault) -> None:
        """Pause the tier fleet-wide after a 429/529 (as the server asked) or an outage (growing steps)."""
        if fault.kind == retry.AUTH_KIND:
            if self.rt.owner not in _AUTH_LOGGED:  # once per worker process, not once per job
                _AUTH_LOGGED.add(self.rt.owner)
                log.error(
                    "the API rejected the key (%s); pausing every tier %.0fs at a time until it is fixed",
                    fault.describe(),
                    self.s.auth_pause_s,
                )
            for t in TIER_ORDER:
                await self.rt.gate.cooldown(t, self.s.auth_pause_s, fault.kind)
        elif fault.outage:
            left, streak = await self.rt.gate.outage(
                tier, fault.kind, retry.OUTAGE_COOLDOWNS_S, retry.OUTAGE_STREAK_RESET_S
            )
            if streak == 1 or left >= retry.OUTAGE_COOLDOWNS_S[-1]:
                log.warning("tier %s: API unreachable (%s); pausing %.0fs", tier, fault.describe(), left)
        elif fault.cooldown_tier:
            await self.rt.gate.cooldown(tier, retry.cooldown_s(fault), fault.kind)
        else:
            return
        self.rt.metrics.observe_cooldown(tier, fault.kind)

    async def save(
        self, attempt: Attempt, answer: dict[str, Any] | None = None, writes: WriteBatch | None = None
    ) -> None:
        """Keep the attempt, write it with whatever else ``writes`` holds (one round trip), count it."""
        self.attempts.append(attempt)
        writes = writes if writes is not None else WriteBatch(self.rt.redis)
        self.rt.store.save_attempt_into(writes, self.job_id, attempt, answer)
        await persist("save_attempt", writes.execute)  # losing a paid answer means paying again
        self.rt.metrics.observe_attempt(attempt, self.job.tags.tenant)

    # ------------------------------------------------------------------------------------------------
    def _result(self, route: RouteRecord | None, status: JobStatus, **kw: Any) -> JobResult:
        return build_result(
            self.s,
            self.job,
            self.attempts,
            status,
            route=route,
            cache_info=self.cache_info,
            today=self.today,
            **kw,
        )

    async def finish_done(self, route: RouteRecord, attempt: Attempt, text: str, stop: str | None) -> str:
        parsed: dict[str, Any] = {}
        if self.job.output.type == "json":
            # the json check may be off for this task: an answer that is not JSON stays text
            with contextlib.suppress(NotJSON):
                parsed = {"output_type": "json", "parsed_output": parse_json_output(text)}
        result = self._result(
            route, "done", tier=attempt.tier, model=attempt.model, output=text, stop_reason=stop, **parsed
        )
        if await self.rt.store.record(result):
            self.rt.metrics.observe_result(result)
            try:
                await maybe_shadow(self.rt, self.job, attempt.tier, text)
            except Exception as e:  # monitoring must never fail the job it watches
                log.error("could not schedule a shadow run for %s: %s", self.job_id, exception_summary(e))
        return "done"

    async def finish_failed(
        self,
        route: RouteRecord | None,
        kind: str,
        message: str,
        output: str | None = None,
        stop_reason: str | None = None,
    ) -> str:
        last = self.attempts[-1] if self.attempts else None
        result = self._result(
            route,
            "failed",
            error=message,
            error_type=kind,
            output=output,
            stop_reason=stop_reason,
            tier=last.tier if last else (route.tier if route else None),
            model=last.model if last else None,
        )
        cause = dead_letter(self.job, kind, message, len(self.attempts))
        if await self.rt.store.record(result, dead_cause=cause):
            self.rt.metrics.observe_result(result)
        return "failed"
