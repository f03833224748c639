"""All configuration, in one pydantic-settings class.

Environment variables use the prefix ``ROUTEQ_`` (nested fields with ``__``, e.g.
``ROUTEQ_LIMITS__OPUS__CONCURRENCY=4``); a ``.env`` file in the working directory is read too. Three
variables keep their conventional names: ``REDIS_URL``, and the Anthropic SDK's own ``ANTHROPIC_API_KEY``
and ``ANTHROPIC_BASE_URL``.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.catalog import Catalog, ModelSpec, load_catalog
from jobs.contract import PdfMode, TaskType
from jobs.keys import Keys
from jobs.schedule import Mode, check_deadline
from jobs.tiers import Tier


class TierLimits(BaseModel):
    """Fleet-wide limits of one tier. ``None`` means not limited by routeq (the API may still limit)."""

    model_config = ConfigDict(extra="forbid")
    concurrency: int = Field(default=8, ge=1)
    rpm: int | None = Field(default=None, ge=1)
    itpm: int | None = Field(default=None, ge=1)
    otpm: int | None = Field(default=None, ge=1)


def _default_limits() -> dict[Tier, TierLimits]:
    return {
        Tier.haiku: TierLimits(concurrency=16),
        Tier.sonnet: TierLimits(concurrency=8),
        Tier.opus: TierLimits(concurrency=4),
    }


Check = Literal["json", "schema", "max_tokens", "refusal", "empty"]
Strategy = Literal["route", "cascade"]


def _default_cascade_thresholds() -> dict[Tier, float]:
    # Answer-check score at or above which a tier's answer goes one tier up. Haiku's 0.28 escalates
    # ~48% of GSM8K dev answers for ~97.6% of the strong model's accuracy (bench/checks_gsm8k.py).
    return {Tier.haiku: 0.28, Tier.sonnet: 0.5}


def _default_checks() -> dict[TaskType, list[Check]]:
    base: list[Check] = ["json", "schema", "max_tokens", "refusal", "empty"]
    return {t: list(base) for t in TaskType}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ROUTEQ_",
        env_file=".env",
        env_nested_delimiter="__",
        extra="ignore",
        populate_by_name=True,
    )

    # --- connections ------------------------------------------------------------------------------
    # Not in repr: a Redis URL may carry a password, and settings end up in tracebacks and logs.
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ROUTEQ_REDIS_URL", "REDIS_URL", "redis_url"), repr=False
    )
    key_prefix: str = "routeq"
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "anthropic_api_key")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "anthropic_base_url")
    )
    # The SDK's HTTP transport (ROUTEQ_HTTP_TRANSPORT). aiohttp spends less client CPU per call than
    # httpx (bench/overhead.py --transport); both raise the same SDK exceptions for every fault
    # (tests/test_transport_faults.py).
    http_transport: Literal["httpx", "aiohttp"] = "aiohttp"

    # --- tiers, models, prices --------------------------------------------------------------------
    tier_models: dict[Tier, str] = Field(
        default_factory=lambda: {
            Tier.haiku: "claude-haiku-4-5",
            Tier.sonnet: "claude-sonnet-4-5",
            Tier.opus: "claude-opus-4-5",
        }
    )
    models_file: Path | None = None

    # --- fleet-wide limits (defaults; `routeq limits set` overrides them at runtime) --------------
    limits: dict[Tier, TierLimits] = Field(default_factory=_default_limits)
    lease_ttl_s: float = Field(default=30.0, gt=0)
    # A slot freed by a call goes straight to a waiter of the same process, skipping two hops through
    # Redis, when that waiter joined the tier's line at most local_handover_slack_ms after the line's
    # first waiter (first come first served to within that; worker/fleet/handover.py).
    local_handover: bool = True
    local_handover_slack_ms: float = Field(default=250.0, ge=0)

    # --- worker -----------------------------------------------------------------------------------
    intake_max_jobs: int = Field(default=64, ge=1)
    # Per process and tier: how many parked jobs one process may hold while they wait for a slot.
    tier_max_jobs: int | None = Field(default=None, ge=1)
    poll_delay_s: float = Field(default=0.05, gt=0)
    # Tier queues hold parked jobs, which already wait for a slot; polling them as often as the intake
    # queue burns CPU in every idle process for no gain.
    tier_poll_delay_s: float = Field(default=0.2, gt=0)
    # An intake job refused only for want of a slot waits in the tier's line (holding its intake slot,
    # handed the next free slot by a release) while fewer than this many times the tier's concurrency
    # limit wait there fleet-wide; beyond that it parks on the tier's queue. 0: always park.
    intake_line_depth: float = Field(default=8.0, ge=0)
    job_timeout_s: float = Field(default=900.0, gt=0)
    arq_max_tries: int = Field(default=20, ge=1)
    drain_timeout_s: float = Field(default=25.0, ge=0)
    call_timeout_s: float = Field(default=120.0, gt=0)
    metrics_port: int | None = None

    # --- retries, escalation ----------------------------------------------------------------------
    max_attempts: int = Field(default=6, ge=1)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    # How long a job keeps waiting out an API outage (connection errors, timeouts), which spends none of
    # its attempts, before it fails.
    outage_patience_s: float = Field(default=600.0, gt=0)
    # After a 401 every tier pauses this long (fleet-wide) before one job probes the key again.
    auth_pause_s: float = Field(default=30.0, gt=0)
    escalate_on_overload: bool = True
    overload_escalate_after: int = Field(default=3, ge=1)
    escalation: bool = True
    max_escalations: int = Field(default=2, ge=0)
    checks: dict[TaskType, list[Check]] = Field(default_factory=_default_checks)
    # Per task: "route" or "cascade" when the job does not say (e.g. ROUTEQ_STRATEGY__REASON=cascade).
    strategy: dict[TaskType, Strategy] = Field(default_factory=dict)
    cascade_thresholds: dict[Tier, float] = Field(default_factory=_default_cascade_thresholds)
    quality_target: float = Field(default=0.95, gt=0, le=1)

    # --- routing ----------------------------------------------------------------------------------
    router_model_path: Path | None = None
    learned_router: bool = True
    # Score thresholds of the learned scorer: below sonnet_at -> haiku, at/above opus_at -> opus.
    threshold_sonnet: float | None = None
    threshold_opus: float | None = None

    # --- prompt caching ---------------------------------------------------------------------------
    caching: bool = True
    cache_warming: bool = True
    cache_ttl: Literal["auto", "5m", "1h"] = "auto"
    warm_wait_s: float = Field(default=60.0, gt=0)

    # --- documents ----------------------------------------------------------------------------------
    # How PDFs are sent: natively (text + page images; layout kept, ~2,000 tokens a page), as their
    # extracted text (cheap), or auto (text when the text layer says it all). Per document: `mode`.
    pdf_mode: PdfMode = "auto"

    # --- quality monitoring -----------------------------------------------------------------------
    shadow_rate: float = Field(default=0.0, ge=0, le=1)
    shadow_budget_usd: float = Field(default=1.0, ge=0)
    # How often an idle shadow puller looks for work; shadow runs are never urgent.
    shadow_poll_s: float = Field(default=1.0, gt=0)

    # --- budgets ----------------------------------------------------------------------------------
    budget_action: Literal["fail", "hold"] = "fail"

    # --- storage ----------------------------------------------------------------------------------
    result_ttl_s: int = Field(default=7 * 86400, ge=60)
    job_expiry_s: int = Field(default=7 * 86400, ge=60)

    # --- Message Batches (half price for work that can wait) ---------------------------------------
    # For jobs whose constraints name no mode / deadline of their own.
    default_mode: Mode = "realtime"
    default_deadline: str | None = None
    # What routeq assumes an API batch takes from create to ended, and the slack kept before a
    # deadline: a job whose deadline is nearer than both goes realtime instead.
    batch_expected_latency_s: float = Field(default=3600.0, ge=0)
    batch_deadline_margin_s: float = Field(default=600.0, ge=0)
    # Gathering: a model's set is submitted once it holds this many requests or bytes, or its oldest
    # request has waited this long.
    batch_max_requests: int = Field(default=10_000, ge=1, le=100_000)
    batch_max_bytes: int = Field(default=128 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    batch_window_s: float = Field(default=30.0, ge=0)
    batch_poll_s: float = Field(default=30.0, gt=0)
    # The API's cap on requests waiting in the batch processing queue, shared by all models and held
    # across the fleet (None: not limited by routeq).
    batch_queue_cap: int | None = Field(default=None, ge=1)
    # Calls per minute to the Message Batches endpoints (create, retrieve, results, list, cancel), held
    # fleet-wide like the tier limits; the API's batch RPM is its own, shared across models. 50 is the
    # lowest usage tier's figure in Anthropic's rate-limit docs, so a new account never meets a 429;
    # raise it to your tier's, or "none" to leave limiting to the API.
    batch_rpm: int | None = Field(default=50, ge=1)

    # --- observability ----------------------------------------------------------------------------
    trace_content: bool = False

    @field_validator("batch_rpm", "batch_queue_cap", mode="before")
    @classmethod
    def _none_word(cls, v: Any) -> Any:
        return None if isinstance(v, str) and v.strip().lower() in ("none", "") else v

    @field_validator("default_deadline")
    @classmethod
    def _deadline(cls, v: str | None) -> str | None:
        return None if v is None else check_deadline(v)

    # --- web UI (worker/web) ----------------------------------------------------------------------
    # SecretStr: never in repr, logs or tracebacks. Required unless `routeq ui --no-auth` on loopback.
    ui_token: SecretStr | None = None
    # Prompt and answer text on the pages; off, so a viewer sees costs and routes, not content.
    ui_show_content: bool = False
    # Base URL of a Jaeger UI: each job row links to its trace there.
    jaeger_url: str | None = None

    @field_validator("models_file", "router_model_path")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.key_prefix)

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.models_file)

    def model_for(self, tier: Tier) -> str:
        return self.tier_models[tier]

    def spec_for(self, tier: Tier) -> ModelSpec:
        return self.catalog.spec(self.tier_models[tier])

    def strategy_for(self, task: TaskType, asked: Strategy | None) -> Strategy:
        return asked or self.strategy.get(task, "route")

    def tier_limits(self, tier: Tier) -> TierLimits:
        return self.limits.get(tier, TierLimits())


# Values never echoed back in an error: they may hold a credential.
_SECRET_FIELDS = frozenset({"redis_url", "anthropic_api_key"})


def _variable(field: str, rest: tuple[Any, ...]) -> str:
    """The environment variable that sets ``field`` (and the nested path ``rest``)."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        names = [str(c) for c in alias.choices if str(c).isupper()]
        if names:
            return next((n for n in names if n in os.environ), names[0])
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return "__".join([prefix + field, *(str(p) for p in rest)]).upper()


def explain_settings_error(exc: ValidationError) -> str:
    """One line per invalid setting, naming its environment variable (values of secrets not shown)."""
    lines = []
    for err in exc.errors():
        loc = err.get("loc") or ("?",)
        field = str(loc[0])
        name = _variable(field, tuple(loc[1:]))
        got = "" if field in _SECRET_FIELDS or "input" not in err else f" (got {err['input']!r})"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"invalid setting {name}: {msg}{got}")
    return "\n".join(lines)
