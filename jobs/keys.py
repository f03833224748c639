"""Every Redis key routeq reads or writes, in one place for producer and worker.

All keys share the prefix ``routeq:`` (configurable as ``ROUTEQ_KEY_PREFIX`` through ``Keys(prefix)``)
so one Redis can host several deployments. arq's own keys (``arq:job:*``, ``arq:in-progress:*``,
``arq:retry:*``) are arq's; the queue sorted sets are named here.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.tiers import Tier

# The arq function every routeq job runs as.
JOB_FUNCTION = "process_job"
# arq's job document key (``arq.constants.job_key_prefix``), written directly by the bulk producer and
# by a worker parking a job on a tier queue.
ARQ_JOB_PREFIX = "arq:job:"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "routeq"

    # --- queues (arq sorted sets) -------------------------------------------------------------
    @property
    def intake_queue(self) -> str:
        """Where producers put new jobs; any worker routes them."""
        return f"{self.prefix}:queue"

    def tier_queue(self, tier: Tier | str) -> str:
        """Jobs parked for a saturated tier; only that tier's pullers take them (no head-of-line block)."""
        return f"{self.prefix}:queue:{tier}"

    # --- per job ------------------------------------------------------------------------------
    def result(self, job_id: str) -> str:
        """JSON of the job's final outcome (result or failure)."""
        return f"{self.prefix}:result:{job_id}"

    def attempts(self, job_id: str) -> str:
        """List of JSON attempt records, appended as each model call ends (paid calls survive a crash)."""
        return f"{self.prefix}:attempts:{job_id}"

    def paid(self, job_id: str) -> str:
        """Hash attempt-no -> response JSON of calls already paid for, so a re-run does not call again."""
        return f"{self.prefix}:paid:{job_id}"

    def route(self, job_id: str) -> str:
        return f"{self.prefix}:route:{job_id}"

    # --- per batch ----------------------------------------------------------------------------
    def batch_meta(self, batch: str) -> str:
        """Hash: created_at, tenant, enqueued, duplicates, rejected."""
        return f"{self.prefix}:batch:{batch}:meta"

    def batch_jobs(self, batch: str) -> str:
        """Set of job ids accepted into the batch (the enqueue dedup set)."""
        return f"{self.prefix}:batch:{batch}:jobs"

    def batch_done(self, batch: str) -> str:
        """Set of job ids with a final outcome (makes aggregate updates idempotent)."""
        return f"{self.prefix}:batch:{batch}:done"

    def batch_agg(self, batch: str) -> str:
        """Hash of exact integer aggregates (costs in pico-USD, tokens) for the batch."""
        return f"{self.prefix}:batch:{batch}:agg"

    def batch_docs(self, batch: str) -> str:
        """Hash document content key -> how many jobs of the batch carry it (a breakpoint pays only if >1)."""
        return f"{self.prefix}:batch:{batch}:docs"

    def batch_held(self, batch: str) -> str:
        """Sorted set job id -> when (ms) a budget-held job is tried again; future scores are held now."""
        return f"{self.prefix}:batch:{batch}:held"

    def batch_dead(self, batch: str) -> str:
        """Hash job id -> JSON cause, for jobs that exhausted their tries."""
        return f"{self.prefix}:batch:{batch}:dead"

    @property
    def batches(self) -> str:
        """Sorted set of batch ids by creation time."""
        return f"{self.prefix}:batches"

    # --- per tenant ---------------------------------------------------------------------------
    def tenant_agg(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:agg"

    # --- limits (worker/limits.py) ------------------------------------------------------------
    def leases(self, tier: Tier | str) -> str:
        """Sorted set lease-id -> deadline (ms, Redis clock): the global concurrency semaphore."""
        return f"{self.prefix}:limits:{tier}:leases"

    def line(self, tier: Tier | str) -> str:
        """Sorted set lease-id -> first-seen ms: jobs waiting for a slot of the tier, fleet-wide, in order."""
        return f"{self.prefix}:limits:{tier}:line"

    def line_info(self, tier: Tier | str) -> str:
        """Hash lease-id -> "deadline ms|itpm|otpm": what each waiter in the line asks for, and until when."""
        return f"{self.prefix}:limits:{tier}:line:info"

    def bucket(self, tier: Tier | str, kind: str) -> str:
        """Hash {tokens, ts} of a token bucket: kind is rpm, itpm or otpm."""
        return f"{self.prefix}:limits:{tier}:bucket:{kind}"

    def cooldown(self, tier: Tier | str) -> str:
        """String with a PX expiry: while it exists the tier is cooling down after a 429/529."""
        return f"{self.prefix}:limits:{tier}:cooldown"

    def outage(self, tier: Tier | str) -> str:
        """Counter with a PX expiry: failed probes of the API in the tier's current outage."""
        return f"{self.prefix}:limits:{tier}:outage"

    @property
    def limits_config(self) -> str:
        """Hash tier:field -> value: runtime overrides of the settings' limits (`routeq limits set`)."""
        return f"{self.prefix}:limits:config"

    @property
    def limits_channel(self) -> str:
        """Pub/sub channel: a slot was released or limits changed; waiting workers retry at once."""
        return f"{self.prefix}:limits:events"

    def grants_channel(self, owner: str) -> str:
        """Pub/sub channel of one worker process: slots handed to its waiters (``grant:<tier>:<lease>``).
        Per process, so a grant wakes only the process it is for."""
        return f"{self.prefix}:limits:grants:{owner}"

    # --- prompt caching (worker/cache.py) -----------------------------------------------------
    def cache_warm(self, prefix_hash: str) -> str:
        """Marker that a prefix was written to the API's cache; PX = the cache TTL."""
        return f"{self.prefix}:cache:{prefix_hash}:warm"

    def cache_warming(self, prefix_hash: str) -> str:
        """Lock held by the one job that writes a cold prefix; PX bounded so a dead holder frees it."""
        return f"{self.prefix}:cache:{prefix_hash}:warming"

    # --- budgets (worker/budget.py) -----------------------------------------------------------
    def budget(self, scope: str, name: str) -> str:
        """Hash {cap, spent, reserved} in pico-USD for scope tenant|batch."""
        return f"{self.prefix}:budget:{scope}:{name}"

    @property
    def budget_capped(self) -> str:
        """Set of "<scope>:<name>" that have a cap (plus a marker once it lists all of them): workers
        reserve before a call only in capped scopes."""
        return f"{self.prefix}:budget-capped"

    # --- worker liveness (worker/recovery.py) -----------------------------------------------
    @property
    def recovery_owners(self) -> str:
        """Set of owner tokens of worker processes that registered (live or not yet reaped)."""
        return f"{self.prefix}:recovery:owners"

    def recovery_alive(self, owner: str) -> str:
        """Heartbeat of one worker process: a string with a short PX, refreshed by a thread."""
        return f"{self.prefix}:recovery:alive:{owner}"

    def recovery_running(self, owner: str) -> str:
        """Set of arq job ids whose in-progress key this owner set (removed as arq finishes them)."""
        return f"{self.prefix}:recovery:jobs:{owner}"

    # --- quality monitoring (worker/quality.py) -----------------------------------------------
    @property
    def quality(self) -> str:
        """Hash task:tier:{agree,total} counters of shadow comparisons."""
        return f"{self.prefix}:quality"

    @property
    def quality_labels(self) -> str:
        """List of JSON labelled outcomes from shadow runs, exportable as training data."""
        return f"{self.prefix}:quality:labels"

    @property
    def shadow_queue(self) -> str:
        return f"{self.prefix}:queue:shadow"
