"""The job contract (version 1): what a producer may ask of routeq.

A job is immutable once accepted. Its caller's ``id`` is a name inside its batch; routeq's own id for
it (``internal_id``, the one in every per-job Redis key) is derived from the batch and that name, or
from the job's content when no id is given, so the same name in two batches is two jobs and enqueueing
the same job twice into a batch processes it once.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any, Literal

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from jobs.schedule import Mode, check_deadline
from jobs.tiers import Tier

CONTRACT_VERSION = 1
# Scheduling, not content: a job sent again with another mode or deadline is the same work.
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
NAME_MAX = 128
NAME_RULE = f"1 to {NAME_MAX} characters, each a letter, digit, '-', '_' or '.'"
# Fields that say where a job came from or how it travels, not what it asks: not part of its identity.
_NOT_CONTENT = frozenset({"id", "internal_id", "trace_context", "source"})
_NOT_CONSTRAINTS = frozenset({"mode", "deadline"})
# Constraints newer than the first workers, whose Job forbids unknown fields: left out of the job
# document while unset, so a job that does not use them still reads on a worker from before them.
_OMIT_UNSET_CONSTRAINTS = ("strategy", "mode", "deadline")


def _readable_by_older_workers(wire: dict[str, Any]) -> dict[str, Any]:
    c = wire.get("constraints")
    if isinstance(c, dict):
        for k in _OMIT_UNSET_CONSTRAINTS:
            if k in c and c[k] is None:
                del c[k]
    return wire


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a batch, tenant or job id name (it is part of Redis keys), or None."""
    if not value:
        return f"is empty (use {NAME_RULE})"
    if len(value) > NAME_MAX:
        return f"is {len(value)} characters long (use {NAME_RULE})"
    bad = sorted(set(value) - _ID_CHARS)
    if bad:
        return f"contains {''.join(bad)!r} (use {NAME_RULE})"
    return None


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a valid name, else ValueError naming the kind, the value and the rule."""
    problem = name_problem(value)
    if problem is not None:
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise ValueError(f"{kind} {shown!r} {problem}")
    return value


def scoped_id(batch: str, caller_id: str) -> str:
    """routeq's id for the job a caller named ``caller_id`` in ``batch``: safe in a key, no content."""
    return "i" + hashlib.sha256(f"{batch}\0{caller_id}".encode()).hexdigest()[:31]


def content_digest(wire: dict[str, Any]) -> str:
    """sha256 hex of a job document's content: everything but its ids, source and trace context, and
    when it must be done (the producer pins a duration deadline to a time without changing the job)."""
    body = {k: v for k, v in wire.items() if k not in _NOT_CONTENT}
    if isinstance(body.get("constraints"), dict):
        body["constraints"] = {k: v for k, v in body["constraints"].items() if k not in _NOT_CONSTRAINTS}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


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


PdfMode = Literal["native", "text", "auto"]
MediaType = Literal["text/plain", "application/pdf"]
# Characters a token, for estimates before a real count is known (the worker's layout uses the same).
CHARS_PER_TOKEN = 4


class Document(_Strict):
    """A document the job is about, in one of two forms on the wire.

    Inline text, ``{"name", "text"}``, as it always was. Or a reference to content stored once per batch
    in Redis (``Keys.batch_document``) by its SHA-256, ``ref``: documents read from files at enqueue
    (PDF, HTML, DOCX, text), so a file shared by many jobs is stored once and the worker needs no access
    to the producer's files. ``media_type`` says how the content is sent: ``application/pdf`` natively
    as a PDF document block, ``text/plain`` as text (a PDF's extracted text layer included). PDFs carry
    their ``pages`` and the ``mode`` chosen, with its reason; ``tokens`` is the estimate of what the
    content will be billed as. The content itself travels from reader to producer in memory
    (:attr:`payload`), never in the job.
    """

    name: str = Field(min_length=1, max_length=512)
    text: str | None = Field(default=None, min_length=1)
    ref: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    media_type: MediaType = "text/plain"
    pages: int | None = Field(default=None, ge=1)
    tokens: int | None = Field(default=None, ge=0)
    mode: PdfMode | None = None
    mode_reason: str | None = Field(default=None, max_length=500)
    source: str | None = Field(default=None, max_length=4096)
    _payload: bytes | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_form(self) -> Document:
        if (self.text is None) == (self.ref is None):
            raise ValueError("a document has either text or a ref (stored content), not both or neither")
        if self.media_type == "application/pdf" and (self.ref is None or self.pages is None):
            raise ValueError("a PDF document needs its ref and pages")
        if self.mode is not None and self.pages is None:
            raise ValueError('mode applies to PDFs read from a file: {"path": "a.pdf", "mode": ...}')
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Unset fields stay off the wire, so a text document is exactly {"name", "text"} and
        # the ids of jobs built from text documents do not change.
        out: dict[str, Any] = handler(self)
        return {
            k: v for k, v in out.items() if v is not None and not (k == "media_type" and v == "text/plain")
        }

    @classmethod
    def stored(cls, payload: bytes, **fields: Any) -> Document:
        """A document referring to ``payload`` by its SHA-256, carrying it for the producer to store."""
        doc = cls(ref=hashlib.sha256(payload).hexdigest(), **fields)
        doc._payload = payload
        return doc

    @property
    def payload(self) -> bytes | None:
        """The content to store for ``ref`` (present between the reader and the producer)."""
        return self._payload

    @property
    def is_pdf(self) -> bool:
        return self.media_type == "application/pdf"

    @property
    def estimated_tokens(self) -> int:
        if self.tokens is not None:
            return self.tokens
        return (len(self.text or "") + len(self.name)) // CHARS_PER_TOKEN

    @property
    def content_key(self) -> str:
        """Identity of the document's content, for counting how many jobs of a batch share it."""
        if self.text is not None:
            return hashlib.sha256(f"{self.name}\0{self.text}".encode()).hexdigest()[:24]
        return hashlib.sha256(f"{self.name}\0{self.media_type}\0{self.ref}".encode()).hexdigest()[:24]


class Tags(_Strict):
    tenant: str = "default"
    batch: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("tenant", "batch")
    @classmethod
    def _safe_name(cls, v: str | None) -> str | None:
        problem = None if v is None else name_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v


class Constraints(_Strict):
    min_tier: Tier | None = None
    max_tier: Tier | None = None
    tier: Tier | None = Field(default=None, description="pin the job to this tier")
    # "route": the router picks the tier; "cascade": start at the cheapest allowed tier and escalate
    # only answers whose check score reaches the tier's threshold. None: the task's default (settings).
    strategy: Literal["route", "cascade"] | None = None
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
    id: str | None = Field(default=None, description="the caller's name for the job, unique in its batch")
    internal_id: str | None = Field(default=None, description="set by the producer: routeq's own id")
    source: str | None = Field(default=None, max_length=1024, description="where the job came from")
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

    @field_validator("id", "internal_id")
    @classmethod
    def _id_chars(cls, v: str | None) -> str | None:
        problem = None if v is None else name_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _names_unique(self) -> Job:
        names = [d.name for d in self.documents]
        if len(set(names)) != len(names):
            raise ValueError("documents must have distinct names")
        return self

    # -- identity -------------------------------------------------------------------------------
    def content_hash(self) -> str:
        """Hash of everything that defines the work (not the ids, the source or the trace context)."""
        return content_digest(self.model_dump(mode="json", by_alias=True))

    @property
    def job_id(self) -> str:
        """routeq's id: the producer's ``internal_id``; for a job enqueued before ids were scoped to
        their batch, the id it was enqueued under (the caller's, or the content hash)."""
        return self.internal_id or self.id or "j" + self.content_hash()[:31]

    def with_ids(self, batch: str, tenant: str | None = None) -> Job:
        """This job placed in ``batch`` (and ``tenant``), with its internal id fixed."""
        return Job.model_validate(self.placed_wire(batch, tenant))

    def placed_wire(self, batch: str, tenant: str | None = None) -> dict[str, Any]:
        """``with_ids(batch, tenant).to_wire()`` in one dump: the bulk producer's hot path."""
        return self.place(batch, tenant)[0]

    def place(self, batch: str, tenant: str | None = None) -> tuple[dict[str, Any], str]:
        """The job document placed in ``batch`` (and ``tenant``), and its content digest."""
        wire = self.model_dump(mode="json", by_alias=True)
        tags = wire["tags"]
        tags["batch"] = batch
        if tenant:
            tags["tenant"] = tenant
        digest = content_digest(wire)  # of the full document, so ids stay what they were
        wire["internal_id"] = scoped_id(batch, wire["id"]) if wire["id"] else "j" + digest[:31]
        return _readable_by_older_workers(wire), digest

    # -- wire -----------------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        return _readable_by_older_workers(self.model_dump(mode="json", by_alias=True, exclude_defaults=False))

    @classmethod
    def from_wire(cls, data: Any) -> Job:
        return cls.model_validate(data)

    def estimated_input_tokens(self) -> int:
        """Rough count (~4 characters a token) used before a real count is known."""
        chars = len(self.prompt) + len(self.system or "")
        chars += sum(len(d.text) + len(d.name) for d in self.documents if d.text is not None)
        stored = sum(d.estimated_tokens for d in self.documents if d.text is None)
        return max(1, chars // CHARS_PER_TOKEN + stored)

    @property
    def document_source(self) -> str | None:
        """The file the job's documents were read from (the first one's, relative path), if any."""
        return next((d.source for d in self.documents if d.source), None)
