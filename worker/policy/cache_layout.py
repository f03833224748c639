"""Prompt layout and caching policy: where the breakpoints go, which TTL, and the cache identity.

Layout (the API caches prefixes in the order tools -> system -> messages, and a change invalidates its
level and everything after it), from most shared to least shared:

1. system: the job's system prompt, then the JSON output instruction with the schema serialised with
   sorted keys, so every job with the same system and schema has a byte-identical system prompt;
2. the first user message: one block per document, in the job's order (a job's documents are the part
   other jobs may share): a text block ``<document name="...">text</document>``, or for a PDF sent
   natively a ``document`` block with its base64 bytes (estimated at ``pages * PDF_TOKENS_PER_PAGE``);
3. the job's own prompt, last, never cached (no other job shares it).

Breakpoints go after the system prompt, after the schema instruction and after each document: at most
4 (the earliest, most widely shared ones plus always the last), and only where the prefix so far reaches
the model's ``min_cache_tokens`` (below it the API silently caches nothing). Written tokens are billed
once however many breakpoints there are, so extra breakpoints are free and let jobs that share only
the system prompt or the leading documents read those. Token counts are estimates:
:func:`estimate_tokens` is ~4 characters a token, deterministic, so it can be a little off the API's
real count near the minimum (then the API caches nothing and bills plain input; no error).

Also here: :func:`choose_ttl` (5m or 1h) and :class:`CacheWarmer`, the cross-process coordinator that
lets one job write a cold prefix while the others wait for it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import orjson

from jobs.catalog import ModelSpec
from jobs.contract import CHARS_PER_TOKEN, Document, Job
from jobs.documents.limits import pdf_native_tokens
from worker.policy.pricing import PICO_PER_TOKEN_PER_RATE

Ttl = Literal["5m", "1h"]
TTL_SECONDS: dict[Ttl, float] = {"5m": 300.0, "1h": 3600.0}
MAX_BREAKPOINTS = 4


def estimate_tokens(text: str) -> int:
    """~4 characters a token, rounded up: deterministic, so every worker places breakpoints alike."""
    return -(-len(text) // CHARS_PER_TOKEN)


def schema_instruction(schema: dict[str, Any] | None) -> str:
    if schema is None:
        return "Respond with JSON only: a single JSON value, no prose and no code fences."
    # Sorted keys, no whitespace: equal schemas give equal bytes, so the system prefix is shared.
    body = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()
    return f"Respond with JSON matching this schema: {body}"


def render_document(name: str, text: str) -> str:
    return f'<document name="{html.escape(name, quote=True)}">{text}</document>'


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """Messages API params plus the cache identity of every breakpointed prefix.

    ``prefix_hashes`` run shortest to longest; the last one is the most specific cache entry this
    request writes or reads, the natural key for :class:`CacheWarmer`. ``cached_prefix_tokens`` is the
    estimate up to the last breakpoint (0 without any).
    """

    params: dict[str, Any]
    prefix_hashes: list[str]
    cached_prefix_tokens: int
    breakpoints: int
    reason: str
    ttl: Ttl | None = None
    estimated_input_tokens: int = 0
    breakpoint_labels: list[str] = field(default_factory=list)

    @property
    def warm_hash(self) -> str | None:
        """The prefix to coordinate warming on (the longest cached one), or None when nothing is cached."""
        return self.prefix_hashes[-1] if self.prefix_hashes else None


class MissingContent(LookupError):
    """A document refers to stored content the caller did not supply."""


@dataclass(frozen=True, slots=True)
class _Block:
    where: Literal["system", "user"]
    label: str
    text: str  # the text sent; for a native PDF, its identity (the content hash), which is hashed
    candidate: bool  # a boundary other jobs may share
    tokens: int
    pdf_data: str | None = None  # base64 of a PDF sent natively


def _text_block(where: Literal["system", "user"], label: str, text: str, candidate: bool) -> _Block:
    return _Block(where, label, text, candidate, estimate_tokens(text))


def _document_block(d: Document, shared: bool, contents: Mapping[str, str]) -> _Block:
    label = f"document:{d.name}"
    if d.text is not None:
        return _text_block("user", label, render_document(d.name, d.text), shared)
    assert d.ref is not None
    content = contents.get(d.ref)
    if content is None:
        raise MissingContent(d.name)
    if not d.is_pdf:
        return _text_block("user", label, render_document(d.name, content), shared)
    tokens = d.tokens if d.tokens is not None else pdf_native_tokens(d.pages or 1)
    return _Block("user", label, f"pdf:{d.ref}:{d.name}", shared, tokens, pdf_data=content)


def _blocks(job: Job, unshared: frozenset[str], contents: Mapping[str, str]) -> list[_Block]:
    out: list[_Block] = []
    if job.system:
        out.append(_text_block("system", "system", job.system, candidate=True))
    if job.output.type == "json":
        # Its own boundary: jobs with one system prompt but different schemas still share the first.
        out.append(_text_block("system", "schema", schema_instruction(job.output.json_schema), True))
    for d in job.documents:
        out.append(_document_block(d, d.content_key not in unshared, contents))
    out.append(_text_block("user", "prompt", job.prompt, candidate=False))
    return out


def _render(b: _Block) -> dict[str, Any]:
    if b.pdf_data is None:
        return {"type": "text", "text": b.text}
    return {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": b.pdf_data},
        "title": b.label.removeprefix("document:"),
    }


def _pick(eligible: list[int]) -> list[int]:
    """At most 4: the longest eligible prefix always, then the earliest (the most widely shared)."""
    if len(eligible) <= MAX_BREAKPOINTS:
        return eligible
    return [*eligible[: MAX_BREAKPOINTS - 1], eligible[-1]]


def prefix_hash(model: str, ttl: Ttl, blocks: list[tuple[str, str]]) -> str:
    """Cache identity: model, TTL and every (role, text) block of the prefix, in order."""
    body = orjson.dumps({"model": model, "ttl": ttl, "blocks": blocks})
    return hashlib.sha256(body).hexdigest()[:32]


def build_request(
    job: Job,
    model: str,
    spec: ModelSpec,
    *,
    ttl: Ttl | None,
    caching: bool,
    unshared: frozenset[str] = frozenset(),
    contents: Mapping[str, str] | None = None,
) -> RequestPlan:
    """Lay the job out as Messages API params with cache breakpoints (``ttl=None``: the API default, 5m).

    ``unshared``: content keys of documents no other job is known to carry; no breakpoint after them.
    ``contents``: stored document content by ref, as sent (text, or base64 for a native PDF); a
    document whose content is missing raises :class:`MissingContent`.
    """
    blocks = _blocks(job, unshared, contents or {})
    eff_ttl: Ttl = ttl or "5m"
    cum: list[int] = []
    total = 0
    for b in blocks:
        total += b.tokens
        cum.append(total)

    candidates = [i for i, b in enumerate(blocks) if b.candidate]
    eligible = [i for i in candidates if cum[i] >= spec.min_cache_tokens]
    chosen = _pick(eligible) if caching else []

    control: dict[str, str] = {"type": "ephemeral"}
    if ttl == "1h":
        control["ttl"] = "1h"
    rendered: list[dict[str, Any]] = []
    for i, b in enumerate(blocks):
        blk = _render(b)
        if i in chosen:
            blk["cache_control"] = dict(control)
        rendered.append(blk)
    system = [r for r, b in zip(rendered, blocks, strict=True) if b.where == "system"]
    user = [r for r, b in zip(rendered, blocks, strict=True) if b.where == "user"]

    params: dict[str, Any] = {
        "model": model,
        "max_tokens": min(job.max_output_tokens, spec.max_output_tokens),
        "messages": [{"role": "user", "content": user}],
    }
    if system:
        params["system"] = system

    hashes = [prefix_hash(model, eff_ttl, [(b.where, b.text) for b in blocks[: i + 1]]) for i in chosen]
    labels = [blocks[i].label for i in chosen]
    return RequestPlan(
        params=params,
        prefix_hashes=hashes,
        cached_prefix_tokens=cum[chosen[-1]] if chosen else 0,
        breakpoints=len(chosen),
        reason=_reason(caching, candidates, cum, spec.min_cache_tokens, labels, eff_ttl),
        ttl=eff_ttl if chosen else None,
        estimated_input_tokens=total,
        breakpoint_labels=labels,
    )


def _reason(
    caching: bool, candidates: list[int], cum: list[int], minimum: int, labels: list[str], ttl: Ttl
) -> str:
    if not caching:
        return "caching disabled"
    if not candidates:
        return "nothing shared to cache (no system prompt, schema or documents)"
    if not labels:
        longest = cum[candidates[-1]]
        return f"shared prefix ~{longest} tokens < model minimum {minimum}"
    dropped = sum(1 for i in candidates if cum[i] >= minimum) - len(labels)
    extra = f"; {dropped} boundaries dropped (max {MAX_BREAKPOINTS})" if dropped else ""
    return f"{len(labels)} breakpoint(s) at {', '.join(labels)}; ttl {ttl}{extra}"


# --- TTL choice ------------------------------------------------------------------------------------


def choose_ttl(
    expected_span_s: float, expected_reuses: int, spec: ModelSpec, day: dt.date
) -> tuple[Ttl, str]:
    """5m unless the prefix's users span more than 5 minutes AND a 1h write is expected to be cheaper.

    Model: ``expected_reuses`` later requests read the prefix after the first, spread evenly over
    ``expected_span_s``. Hits refresh the TTL, so an entry stays warm while the mean gap between uses is
    within its TTL (one write); otherwise it lapses in every window it covers, each lapse costing a
    write (capped at one per use). Cost per prefix token = writes * write rate + other uses * read rate.
    """
    entry = spec.price_on(day)
    if expected_span_s <= TTL_SECONDS["5m"]:
        return "5m", f"span {expected_span_s:.0f}s fits one 5m window"
    uses = max(1, expected_reuses + 1)
    gap = expected_span_s / (uses - 1) if uses > 1 else math.inf

    def writes(ttl: Ttl) -> int:
        window = TTL_SECONDS[ttl]
        return 1 if gap <= window else min(uses, math.ceil(expected_span_s / window))

    w5, w1 = writes("5m"), writes("1h")
    c5 = w5 * entry.cache_write_5m + (uses - w5) * entry.cache_read
    c1 = w1 * entry.cache_write_1h + (uses - w1) * entry.cache_read
    detail = (
        f"span {expected_span_s:.0f}s, {uses} uses: 5m {w5} write(s) ~{_pico(c5)} vs "
        f"1h {w1} write(s) ~{_pico(c1)} pico-USD per prefix token"
    )
    if c1 < c5:
        return "1h", f"1h cheaper: {detail}"
    return "5m", f"5m no dearer: {detail}"


def _pico(rate_sum: Decimal) -> str:
    return f"{rate_sum * PICO_PER_TOKEN_PER_RATE:f}".rstrip("0").rstrip(".")
