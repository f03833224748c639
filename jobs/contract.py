"""The job contract (version 1): what a producer may ask of routeq.

A job is immutable once accepted. Its id is given, or derived from its content and its tenant and
batch, so enqueueing the same job twice into a batch processes it once.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any, Literal

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jobs.schedule import Mode, check_deadline
from jobs.tiers import Tier

CONTRACT_VERSION = 1
# Scheduling, not content: a job sent again with another mode or deadline is the same work.
_NOT_IDENTITY: dict[str, Any] = {"id": True, "trace_context": True, "constraints": {"mode", "deadline"}}
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class TaskType(StrEnum):
    classify = "classify"
    extract = "extract"
    summarize = "summarize"
    translate = "translate"  # type: ignore[assignment]  # shadows str.translate, harmlessly
    qa = "qa"
    synthesize = "synthesize"
    reason = "reason"
    code = "code"
    other = "other"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Document(_Strict):
    name: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1)

    @property
    def content_key(self) -> str:
        """Identity of the document's content, for counting how many jobs of a batch share it."""
        return hashlib.sha256(f"{self.name}\0{self.text}".encode()).hexdigest()[:24]


class Tags(_Strict):
    tenant: str = Field(default="default", min_length=1, max_length=128)
    batch: str | None = Field(default=None, min_length=1, max_length=128)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("tenant", "batch")
    @classmethod
    def _safe_name(cls, v: str | None) -> str | None:
        if v is not None and not set(v) <= _ID_CHARS:
            raise ValueError("may contain only letters, digits, '-', '_' and '.'")
        return v


class Constraints(_Strict):
    min_tier: Tier | None = None
    max_tier: Tier | None = None
    tier: Tier | None = Field(default=None, description="pin the job to this tier")
    # None: the worker's default (settings.default_mode / default_deadline).
    mode: Mode | None = None
    deadline: str | None = Field(default=None, description="ISO timestamp with a zone, or a duration: 6h")

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, v: str | None) -> str | None:
        return None if v is None else check_deadline(v)

    @model_validator(mode="after")
    def _consistent(self) -> Constraints:
        lo, hi = self.min_tier, self.max_tier
        if lo is not None and hi is not None and lo.rank > hi.rank:
            raise ValueError(f"min_tier {lo.value!r} is above max_tier {hi.value!r}")
        if self.tier is not None:
            if lo is not None and self.tier.rank < lo.rank:
                raise ValueError(f"pinned tier {self.tier.value!r} is below min_tier {lo.value!r}")
            if hi is not None and self.tier.rank > hi.rank:
                raise ValueError(f"pinned tier {self.tier.value!r} is above max_tier {hi.value!r}")
        return self

    @property
    def low(self) -> Tier:
        return self.tier or self.min_tier or Tier.haiku

    @property
    def high(self) -> Tier:
        return self.tier or self.max_tier or Tier.opus


class OutputFormat(_Strict):
    type: Literal["text", "json"] = "text"
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _schema(self) -> OutputFormat:
        if self.json_schema is not None:
            if self.type != "json":
                raise ValueError('a schema needs type "json"')
            try:
                Draft202012Validator.check_schema(self.json_schema)
            except SchemaError as e:
                where = "/".join(str(p) for p in e.path) or "(root)"
                raise ValueError(f"schema is not a valid JSON Schema at {where}: {e.message}") from None
        return self


class Job(_Strict):
    """One unit of work. ``trace_context`` is reserved for W3C trace propagation; it is not content."""

    version: Literal[1] = 1
    id: str | None = Field(default=None, min_length=1, max_length=128)
    task: TaskType
    prompt: str
    system: str | None = None
    documents: tuple[Document, ...] = ()
    tags: Tags = Field(default_factory=Tags)
    constraints: Constraints = Field(default_factory=Constraints)
    max_output_tokens: int = Field(default=1024, ge=1, le=128_000)
    output: OutputFormat = Field(default_factory=OutputFormat)
    trace_context: dict[str, str] = Field(default_factory=dict)

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt is empty")
        return v

    @field_validator("id")
    @classmethod
    def _id_chars(cls, v: str | None) -> str | None:
        if v is not None and not set(v) <= _ID_CHARS:
            raise ValueError("job id may contain only letters, digits, '-', '_' and '.'")
        return v

    @model_validator(mode="after")
    def _names_unique(self) -> Job:
        names = [d.name for d in self.documents]
        if len(set(names)) != len(names):
            raise ValueError("documents must have distinct names")
        return self

    # -- identity -------------------------------------------------------------------------------
    def content_hash(self) -> str:
        """Hash of everything that defines the work (not the id, not the trace context)."""
        body = self.model_dump(mode="json", exclude=_NOT_IDENTITY, by_alias=True)
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()

    @property
    def job_id(self) -> str:
        return self.id or "j" + self.content_hash()[:31]

    def with_ids(self, batch: str, tenant: str | None = None) -> Job:
        """This job placed in ``batch`` (and ``tenant``), with its id fixed."""
        tags = self.tags.model_copy(
            update={"batch": self.tags.batch or batch, "tenant": tenant or self.tags.tenant}
        )
        placed = self.model_copy(update={"tags": tags})
        return placed.model_copy(update={"id": placed.job_id})

    def placed_wire(self, batch: str, tenant: str | None = None) -> dict[str, Any]:
        """``with_ids(batch, tenant).to_wire()`` in one dump: the bulk producer's hot path."""
        wire = self.model_dump(mode="json", by_alias=True)
        tags = wire["tags"]
        tags["batch"] = tags["batch"] or batch
        if tenant:
            tags["tenant"] = tenant
        if wire["id"] is None:
            body = {k: v for k, v in wire.items() if k not in ("id", "trace_context")}
            body["constraints"] = {
                k: v for k, v in body["constraints"].items() if k not in ("mode", "deadline")
            }
            digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
            wire["id"] = "j" + digest[:31]
        return wire

    # -- wire -----------------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=False)

    @classmethod
    def from_wire(cls, data: Any) -> Job:
        return cls.model_validate(data)

    def estimated_input_tokens(self) -> int:
        """Rough count (~4 characters a token) used before a real count is known."""
        chars = (
            len(self.prompt) + len(self.system or "") + sum(len(d.text) + len(d.name) for d in self.documents)
        )
        return max(1, chars // 4)
