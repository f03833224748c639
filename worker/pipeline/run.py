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
import math
import time
import uuid
from typing import Any

from arq import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.contract import Job
from jobs.documents.store import MissingDocument
from jobs.results import Attempt, AttemptStatus, JobResult, JobStatus, RouteRecord
from jobs.tiers import Tier
from worker.batches import gather as batches
from worker.fleet.admission import Admission, AdmissionTimeout
from worker.fleet.budget import Reservation, token_for
from worker.fleet.cache_warmer import WarmDecision
from worker.fleet.redis_scripts import WriteBatch
from worker.fleet.store import ArqRun, LastAttempt, persist
from worker.observe import tracing
from worker.observe.logsafe import exception_summary
from worker.pipeline import checking, intake
from worker.pipeline.attempt import AttemptScope
from worker.pipeline.call import priced_call
from worker.pipeline.cooldown import cool_down
from worker.pipeline.outcome import build_result, dead_letter
from worker.pipeline.plan import RequestPlanner
from worker.pipeline.shadow import maybe_shadow
from worker.policy import cache_layout, cascade, faults, pricing, router
from worker.policy.checks import NotJSON, parse_json_output
from worker.runtime import Runtime

# ctx key of (the owner's running set, the shared set of arq ids finished by their record): app.py sets it
# beside RecoveringWorker's ``finished_elsewhere``.
ARQ_FINISH = "routeq_arq_finish"
# ctx key of the shared set of intake arq ids claimed with no calls hash (RecoveringWorker.fresh).
FRESH_CLAIMS = "routeq_fresh_claims"

log = logging.getLogger("routeq.pipeline")

# How often a job held by a budget cap (ROUTEQ_BUDGET_ACTION=hold) is tried again.
HOLD_RETRY_S = 60


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
    job = await intake.parse_payload(rt, arq_id, payload)
    if job is None:
        return "invalid"
    queue = rt.keys.tier_queue(parked) if parked else rt.keys.intake_queue
    with tracing.attempt_span(job, job_try, queue):
        arq = None
        if ARQ_FINISH in ctx:  # a RecoveringWorker's run: the record finishes it
            running, finished = ctx[ARQ_FINISH]
            arq = ArqRun(arq_id, queue, running, finished)
        run = JobRun(rt, job, job_try, Tier(parked) if parked else None, payload, fresh_from, arq)
        fresh: set[str] = ctx.get(FRESH_CLAIMS, set())
        if arq_id in fresh:
            fresh.discard(arq_id)
            run.no_history = job_try == 1 and parked is None and arq_id == job.job_id
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


class JobRun:
    def __init__(
        self,
        rt: Runtime,
        job: Job,
        job_try: int,
        parked: Tier | None,
        wire: Any = None,
        fresh_from: int = 0,
        arq: ArqRun | None = None,
    ) -> None:
        self.rt = rt
        self.arq = arq  # the arq job run this is, which its record finishes (None: a batch ingestion)
        # `routeq retry` gives the job a new attempt budget: attempts before this index stay in its trace
        # (and its bill) but no longer count toward max_attempts.
        self.fresh_from = fresh_from
        self.wire = wire if wire is not None else job.to_wire()  # the payload as enqueued, to park as is
        self.settings = rt.settings
        self.job = job
        self.job_id = job.job_id
        self.batch = job.tags.batch or "default"
        self.job_try = job_try
        self.parked = parked
        self.today = dt.datetime.now(dt.UTC).date()
        self.attempts: list[Attempt] = []
        self.planner = RequestPlanner(rt, job, self.batch, self.today)
        self.strategy = self.settings.strategy_for(job.task, job.constraints.strategy)
        self.enqueued_at = time.time()  # arq's enqueue time when known: durations count from it
        # A first delivery whose claim saw no calls hash: no attempt or paid answer to load.
        self.no_history = False

    # ------------------------------------------------------------------------------------------------
    async def run(self) -> str:
        # A redelivery (try 2+) may be of a job recorded just before its worker died: checked.
        paid: dict[int, dict[str, Any]] = {}
        if not self.no_history:
            done, self.attempts, paid = await self.rt.store.load_state(self.job, check_done=self.job_try > 1)
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
        return await self.run_attempts(route, tier)

    def route(self) -> RouteRecord:
        with tracing.route_span() as span:
            learned = None
            if self.rt.scorer is not None and self.settings.learned_router:
                learned = round(self.rt.scorer.score(self.job.prompt + "\n" + (self.job.system or "")), 4)
            rec = router.decide(self.job, learned, self.rt.thresholds)
            self.strategy = self.settings.strategy_for(self.job.task, self.job.constraints.strategy)
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

    async def run_attempts(self, route: RouteRecord, tier: Tier) -> str:
        ceiling = self.job.constraints.high
        escalations = sum(1 for a in self.attempts if a.status in ("check_failed", "escalated"))
        overloads = 0
        errors = sum(
            1
            for a in self.attempts[self.fresh_from :]
            if a.status == "error" and faults.spends_attempt(a.error_type)
        )
        while True:
            if self.parked is None and self.job_mode() != "realtime":
                deadline_at = batches.deadline_of(self)
                if batches.route_now(self, deadline_at) == "batch":
                    refused = await batches.gather(self, route, tier, deadline_at)
                    if isinstance(refused, bool):
                        raise InBatch()
                    await self.refused_by_budget(refused.reason)
            if self.parked is None and self.rt.gate.waiting(tier) >= self.line_below(tier):
                await self.park(tier)  # its line is long with jobs of ours alone: no need to plan first
            plan, ttl = await self.plan(tier)
            n = len(self.attempts) + 1
            writes = WriteBatch(self.rt.redis)
            fault: faults.Fault | None = None
            async with AttemptScope(self.rt) as scope:  # whatever ends the attempt gives back what it holds
                scope.leader = await self.warm_up(tier, plan, ttl)
                scope.admitted(await self.admit(tier, plan))
                scope.reservation = await self.reserve_budget(tier, plan, n, scope)
                t0 = time.perf_counter()
                try:
                    res, cost = await priced_call(
                        self.rt,
                        tier,
                        plan,
                        ttl,
                        job_id=self.job_id,
                        max_output_tokens=self.job.max_output_tokens,
                        today=self.today,
                    )
                except Exception as e:
                    fault = faults.classify(e)
                    latency_ms = int((time.perf_counter() - t0) * 1000)
                else:
                    await scope.settle_into(writes, res, cost, plan, ttl)
            if fault is not None:
                await cool_down(self.rt, tier, fault)
                attempt = Attempt(
                    n=n,
                    tier=tier,
                    model=self.settings.model_for(tier),
                    status="error",
                    error_type=fault.kind,
                    error=fault.message,
                    latency_ms=latency_ms,
                    wait_ms=scope.wait_ms,
                    started_at=time.time(),  # as for an answer: stamped when the call ended
                )
                await self.save(attempt)
                if faults.spends_attempt(fault.kind):
                    errors += 1
                overloads = overloads + 1 if fault.escalatable else 0
                since = faults.outage_started_at([(a.error_type, a.started_at) for a in self.attempts])
                action = faults.next_action(
                    fault,
                    attempt=errors,
                    max_attempts=self.settings.max_attempts,
                    consecutive_overloads=overloads,
                    escalate_on_overload=self.settings.escalate_on_overload,
                    overload_escalate_after=self.settings.overload_escalate_after,
                    can_escalate=tier.rank < ceiling.rank,
                    base_s=self.settings.backoff_base_s,
                    max_s=self.settings.backoff_max_s,
                    rng=self.rt.rng,
                    outage_s=0.0 if since is None else max(0.0, time.time() - since),
                    outage_patience_s=self.settings.outage_patience_s,
                )
                if action.kind == "retry":
                    await asyncio.sleep(action.delay_s)
                    continue
                if action.kind == "escalate":
                    tier, overloads = Tier(tier.next_up() or tier), 0
                    continue
                return await self.finish_failed(route, fault.kind, action.message)
            # --- a paid answer: its slot is free already; budget and cache writes go with its record ---
            check = checking.score(
                self.rt, self.job, self.planner.document_texts(), res.text, res.stop_reason
            )
            decision = cascade.decide(
                strategy=self.strategy,
                check=check,
                tier=tier,
                ceiling=ceiling,
                threshold=checking.threshold(self.rt, self.job, tier),
                escalations=escalations,
                max_escalations=self.settings.max_escalations,
                escalation=self.settings.escalation,
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
            answer = {"text": res.text, "stop_reason": res.stop_reason}
            if decision.action == "keep":
                # The answer's save rides with its record, in the same script (its budget and cache writes
                # in the same round trip).
                self.attempts.append(attempt)
                last = (attempt, answer, scope.spend)
                return await self.finish_done(route, attempt, res.text, res.stop_reason, writes, last)
            self.queue_save(attempt, answer, writes, scope.spend)
            await self.send(writes, attempt)
            if decision.action == "escalate":
                escalations += 1
                tier = Tier(tier.next_up() or tier)
                continue
            return await self.finish_failed(  # "fail"
                route,
                "check_failed",
                attempt.error or "answer failed checks",
                output=res.text,
                stop_reason=res.stop_reason,
            )

    def job_mode(self) -> str:
        return self.job.constraints.mode or self.settings.default_mode

    # ------------------------------------------------------------------------------------------------
    async def plan(self, tier: Tier) -> tuple[cache_layout.RequestPlan, cache_layout.Ttl | None]:
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
        self, tier: Tier, plan: cache_layout.RequestPlan, ttl: cache_layout.Ttl | None
    ) -> WarmDecision | None:
        """Let one job per cold prefix go first; hold the others until its response has started.

        On the intake queue a follower is parked instead of waiting, so it holds no intake slot.
        """
        h = plan.warm_hash
        if not (self.settings.cache_warming and h and ttl):
            return None
        ttl_s = cache_layout.TTL_SECONDS[ttl]
        t0 = time.monotonic()
        d = await self.rt.warmer.claim(h, ttl_s)
        if d.kind == "follower":
            if self.parked is None:
                await self.park(tier)
            with tracing.wait_span("cache_warm", tier) as span:
                d = await self.rt.warmer.acquire(h, ttl_s, timeout_s=self.settings.warm_wait_s)
                span.set_attribute("routeq.wait_ms", int((time.monotonic() - t0) * 1000))
                span.set_attribute("routeq.cache.warm_decision", d.kind)
        self.cache_info["warming"] = d.kind
        return d if d.kind == "leader" else None

    async def admit(self, tier: Tier, plan: cache_layout.RequestPlan) -> Admission:
        # Uncached input and cache writes count toward input tokens/min; reads do not (as on the API).
        est_in, est_out = plan.estimated_input_tokens, self.job.max_output_tokens
        if self.parked is None:
            # Refused for want of a slot with a short line, the job waits in it (a release hands it the
            # next slot); otherwise it parks and this intake slot goes to the next job.
            try:
                got = await self.rt.gate.try_admit_or_wait(
                    tier, est_in, est_out, self.line_below(tier), timeout_s=self.settings.job_timeout_s / 2
                )
            except AdmissionTimeout:
                got = None
            if not isinstance(got, Admission):
                await self.park(tier)
            assert isinstance(got, Admission)
            if got.waited_on:
                self.rt.metrics.observe_wait(tier, ",".join(got.waited_on), got.wait_ms / 1000.0)
            return got
        with tracing.wait_span("tier_slot", tier) as span:
            try:
                adm = await self.rt.gate.admit(
                    tier, est_in, est_out, timeout_s=self.settings.job_timeout_s / 2
                )
            except AdmissionTimeout:
                # Hand the job back to its tier queue instead of letting arq time it out as a failure.
                raise Retry(defer=1) from None
            span.set_attribute("routeq.wait_ms", adm.wait_ms)
            span.set_attribute("routeq.wait.reason", ",".join(adm.waited_on) or "none")
            self.rt.metrics.observe_wait(tier, ",".join(adm.waited_on) or "none", adm.wait_ms / 1000.0)
        return adm

    def line_below(self, tier: Tier) -> int:
        """How short the tier's line must be (fleet-wide) for an intake job to wait in it."""
        return math.ceil(self.settings.intake_line_depth * self.settings.tier_limits(tier).concurrency)

    async def park(self, tier: Tier) -> None:
        """Hand the job to the tier's own queue and free this intake slot.

        What ``enqueue_job`` writes, in one MULTI instead of its WATCH round trips. A re-run of an intake
        job parked before (its run died before arq's finish) finds the document there and adds nothing.
        """
        await intake.park(self.rt, self.job_id, self.wire, tier, self.fresh_from)
        self.parked = tier
        raise Parked()

    async def reserve_budget(
        self, tier: Tier, plan: cache_layout.RequestPlan, n: int, scope: AttemptScope
    ) -> Reservation:
        """Reserve the call's worst case: concurrent jobs overspend a cap by at most their own bound."""
        spec = self.settings.spec_for(tier)
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
        await self.refused_by_budget(got.reason)
        raise AssertionError("unreachable")  # refused_by_budget always raises

    async def refused_by_budget(self, reason: str) -> None:
        """A cap leaves no room: hold the job for a later try (``hold``), else fail it. Always raises."""
        if self.settings.budget_action == "hold":
            await intake.hold(self.rt, self.batch, self.job_id, HOLD_RETRY_S)
            raise Retry(defer=HOLD_RETRY_S)  # arq re-runs it later; raising a cap lets it through
        await self.finish_failed(None, "budget", reason)
        raise Stopped()

    async def save(
        self,
        attempt: Attempt,
        answer: dict[str, Any] | None = None,
        writes: WriteBatch | None = None,
        spend: Any = None,
    ) -> None:
        """Keep the attempt, write it with whatever else ``writes`` holds (one round trip), count it."""
        writes = writes if writes is not None else WriteBatch(self.rt.redis)
        self.queue_save(attempt, answer, writes, spend)
        await self.send(writes, attempt)

    def queue_save(
        self, attempt: Attempt, answer: dict[str, Any] | None, writes: WriteBatch, spend: Any = None
    ) -> None:
        """Keep the attempt and queue its save in ``writes``; :meth:`send` (or a record) writes it."""
        self.attempts.append(attempt)
        self.rt.store.save_attempt_into(writes, self.job_id, attempt, answer, spend)

    async def send(self, writes: WriteBatch, attempt: Attempt) -> None:
        await persist("save_attempt", writes.execute)  # losing a paid answer means paying again
        self.rt.metrics.observe_attempt(attempt, self.job.tags.tenant)

    # ------------------------------------------------------------------------------------------------
    def _result(self, route: RouteRecord | None, status: JobStatus, **kw: Any) -> JobResult:
        return build_result(
            self.settings,
            self.job,
            self.attempts,
            status,
            route=route,
            cache_info=self.cache_info,
            today=self.today,
            **kw,
        )

    async def finish_done(
        self,
        route: RouteRecord,
        attempt: Attempt,
        text: str,
        stop: str | None,
        writes: WriteBatch | None = None,
        last: LastAttempt | None = None,
    ) -> str:
        """Record a done job; ``writes``: what ends its last call (slot, budget, cache), not sent yet, to
        go with the record; ``last``: that call's attempt, kept in ``self.attempts`` but not saved yet,
        saved by the record."""
        try:
            parsed: dict[str, Any] = {}
            if self.job.output.type == "json":
                # the json check may be off for this task: an answer that is not JSON stays text
                with contextlib.suppress(NotJSON):
                    parsed = {"output_type": "json", "parsed_output": parse_json_output(text)}
            result = self._result(
                route, "done", tier=attempt.tier, model=attempt.model, output=text, stop_reason=stop, **parsed
            )
        except BaseException:
            if writes is not None or last is not None:  # the paid answer is kept whatever went wrong here
                writes = writes if writes is not None else WriteBatch(self.rt.redis)
                if last is not None:
                    self.rt.store.save_attempt_into(writes, self.job_id, *last)
                await self.send(writes, attempt)
            raise
        recorded = await self.rt.store.record(result, arq=self.arq, writes=writes, last=last)
        if writes is not None or last is not None:
            self.rt.metrics.observe_attempt(attempt, self.job.tags.tenant)
        if recorded:
            self.rt.metrics.observe_result(result)
            try:
                await maybe_shadow(self.rt, self.job, self.attempts, attempt, text)
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
        if await self.rt.store.record(result, dead_cause=cause, arq=self.arq):
            self.rt.metrics.observe_result(result)
        return "failed"

    async def finish_canceled(self, route: RouteRecord | None, message: str) -> str:
        """The user canceled the job's batch: an outcome of its own, not a failure or a dead letter."""
        last = self.attempts[-1] if self.attempts else None
        result = self._result(
            route,
            "canceled",
            error=message,
            error_type="canceled",
            tier=last.tier if last else (route.tier if route else None),
            model=last.model if last else None,
        )
        if await self.rt.store.record(result, arq=self.arq):
            self.rt.metrics.observe_result(result)
        return "canceled"
