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
# Field of the quality hash and of batch and tenant aggregates: pico-USD spent on shadow runs.
SHADOW_COST_FIELD = "shadow_cost_pusd"


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

    def calls(self, job_id: str) -> str:
        """Hash of the job's model calls, written as each ends: ``"<n>"`` -> ``{"attempt": record,
        "answer": the paid response or null}``, so a re-run after a crash reuses a paid answer instead of
        paying again. One field per call, so its save is one HSETNX and a run's load one HGETALL."""
        return f"{self.prefix}:calls:{job_id}"

    # --- per batch ----------------------------------------------------------------------------
    def batch_meta(self, batch: str) -> str:
        """Hash: created_ms, tenant (the batch's one owner), enqueued, duplicates, rejected."""
        return f"{self.prefix}:batch:{batch}:meta"

    def batch_jobs(self, batch: str) -> str:
        """Set of job ids accepted into the batch (the enqueue dedup set)."""
        return f"{self.prefix}:batch:{batch}:jobs"

    def batch_ids(self, batch: str) -> str:
        """Hash internal id -> "<content sha256> <caller's id>" for jobs enqueued with an ``id``: how the
        producer tells the same job sent twice from another job reusing the name."""
        return f"{self.prefix}:batch:{batch}:ids"

    def batch_done(self, batch: str) -> str:
        """Set of job ids with a final outcome (makes aggregate updates idempotent)."""
        return f"{self.prefix}:batch:{batch}:done"

    def batch_agg(self, batch: str) -> str:
        """Hash of exact integer aggregates (costs in pico-USD, tokens) for the batch. Fields starting
        with ``@`` (per-minute series, see ``jobs.results.BATCH_ONLY``) are kept here only, not per tenant."""
        return f"{self.prefix}:batch:{batch}:agg"

    def batch_docs(self, batch: str) -> str:
        """Hash document content key -> how many jobs of the batch carry it (a breakpoint pays only if >1)."""
        return f"{self.prefix}:batch:{batch}:docs"

    def batch_document(self, batch: str, ref: str) -> str:
        """String: the content of a document read from a file (PDF bytes or UTF-8 text), stored once per
        batch under its SHA-256 ``ref`` and read by the worker that sends it; expires with the batch."""
        return f"{self.prefix}:batch:{batch}:document:{ref}"

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

    # --- limits (worker/fleet/tier_gate.py) ------------------------------------------------------------
    def leases(self, tier: Tier | str) -> str:
        """Sorted set lease-id -> deadline (ms, Redis clock): the global concurrency semaphore."""
        return f"{self.prefix}:limits:{tier}:leases"

    def line(self, tier: Tier | str) -> str:
        """Sorted set "<lease id>|<itpm>|<otpm>" -> joined ms: jobs waiting for a slot of the tier,
        fleet-wide, in order, each with what it asks of the token buckets."""
        return f"{self.prefix}:limits:{tier}:line"

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

    # --- prompt caching (worker/policy/cache_layout.py) -----------------------------------------------------
    def cache_warm(self, prefix_hash: str) -> str:
        """Marker that a prefix was written to the API's cache; PX = the cache TTL."""
        return f"{self.prefix}:cache:{prefix_hash}:warm"

    def cache_warming(self, prefix_hash: str) -> str:
        """Lock held by the one job that writes a cold prefix; PX bounded so a dead holder frees it."""
        return f"{self.prefix}:cache:{prefix_hash}:warming"

    # --- budgets (worker/fleet/budget.py) -----------------------------------------------------------
    def budget(self, scope: str, name: str) -> str:
        """Hash {cap, spent, reserved} in pico-USD for scope tenant|batch."""
        return f"{self.prefix}:budget:{scope}:{name}"

    def budget_tokens(self, batch: str) -> str:
        """Hash reservation token -> state for a batch's calls (``budget:tokens:<batch>`` cannot clash with
        a scope hash: the scope is never "tokens")."""
        return f"{self.prefix}:budget:tokens:{batch}"

    @property
    def budget_capped(self) -> str:
        """Set of "<scope>:<name>" that have a cap (plus a marker once it lists all of them): workers
        reserve before a call only in capped scopes."""
        return f"{self.prefix}:budget-capped"

    # --- Message Batches (worker/batches/) ----------------------------------------------------
    @property
    def batch_items(self) -> str:
        """Hash custom_id -> JSON of a request routed to a Message Batch, from gathering until its result
        is ingested (HSETNX: a request is gathered once however often its job is delivered)."""
        return f"{self.prefix}:mb:items"

    def batch_gather(self, model: str) -> str:
        """Sorted set custom_id -> ms first gathered: a model's requests waiting to be submitted."""
        return f"{self.prefix}:mb:gather:{model}"

    def batch_prefix_seen(self, model: str, prefix_hash: str) -> str:
        """When a cached prefix was first gathered for the model (ms, PX 1 h): the gathering score of every
        request sharing it, so they sit together and go into the same Message Batch."""
        return f"{self.prefix}:mb:prefix:{model}:{prefix_hash}"

    @property
    def batch_gather_bytes(self) -> str:
        """Hash model -> bytes of request JSON in that model's gathering set."""
        return f"{self.prefix}:mb:gather-bytes"

    def batch_size_cap(self, model: str) -> str:
        """Requests per batch for the model after a 413 (PX): half of what was refused, until it expires."""
        return f"{self.prefix}:mb:size-cap:{model}"

    @property
    def batch_in_api_count(self) -> str:
        """Requests in submissions not yet ingested, all models: the batch processing-queue cap's count."""
        return f"{self.prefix}:mb:in-api-count"

    def batch_submitter(self, model: str) -> str:
        """Lease (owner token, PX): the one process submitting a Message Batch for the model."""
        return f"{self.prefix}:mb:submitter:{model}"

    def batch_backoff(self, model: str) -> str:
        """While it exists (PX), no batch is submitted for the model: a create was refused (413/429/5xx)."""
        return f"{self.prefix}:mb:backoff:{model}"

    def api_batch(self, sub_id: str) -> str:
        """Hash of one submission: model, created_ms, owner, custom_ids (JSON), status, batch_id once known.
        Written as an intent before ``create``; the batch id is added after it."""
        return f"{self.prefix}:mb:sub:{sub_id}"

    @property
    def api_batches(self) -> str:
        """Sorted set submission id -> created ms: every submission (`routeq batches`)."""
        return f"{self.prefix}:mb:subs"

    @property
    def api_batches_open(self) -> str:
        """Sorted set submission id -> created ms: submissions whose results are not all ingested."""
        return f"{self.prefix}:mb:subs:open"

    @property
    def api_batch_ids(self) -> str:
        """Set of API batch ids routeq has recorded (recovery adopts only batches not in it)."""
        return f"{self.prefix}:mb:ids"

    def api_batch_lock(self, sub_id: str) -> str:
        """Short lock (PX) of the process polling/ingesting or recovering one submission."""
        return f"{self.prefix}:mb:lock:{sub_id}"

    @property
    def api_batches_poll_turn(self) -> str:
        """Marker (owner, PX = the poll interval): a process took this interval's poll pass, so the fleet
        polls each open submission once per interval, not once per process."""
        return f"{self.prefix}:mb:poll-turn"

    @property
    def batch_rpm_bucket(self) -> str:
        """Hash {tokens, ts}: the token bucket of the Message Batches endpoints' RPM, fleet-wide."""
        return f"{self.prefix}:mb:rpm"

    def batch_in_api(self, batch: str) -> str:
        """Set of a routeq batch's job ids whose request is in a Message Batch (for `routeq status`)."""
        return f"{self.prefix}:batch:{batch}:in-api"

    # --- worker liveness (worker/fleet/recovery.py) -----------------------------------------------
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

    def agg_pending_prefix(self) -> str:
        return f"{self.prefix}:recovery:agg-pending:"

    def agg_pending(self, owner: str) -> str:
        """Hash job id -> aggregate entry of jobs one worker process recorded but has not yet added to
        their batch and tenant aggregates (it does every ~100 ms; a reaper does for a dead one)."""
        return self.agg_pending_prefix() + owner

    # --- quality monitoring (worker/fleet/quality.py) -----------------------------------------------
    @property
    def quality(self) -> str:
        """Hash task:tier:{agree,total} counters of shadow comparisons."""
        return f"{self.prefix}:quality"

    @property
    def quality_labels(self) -> str:
        """List of JSON labelled outcomes from shadow runs, exportable as training data."""
        return f"{self.prefix}:quality:labels"

    @property
    def calibration(self) -> str:
        """Hash task -> JSON of its calibrated cascade (thresholds per tier, signal weights)."""
        return f"{self.prefix}:quality:calibration"

    @property
    def shadow_queue(self) -> str:
        return f"{self.prefix}:queue:shadow"
