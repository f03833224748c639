"""Deterministic answers in the shape the prompt asks for.

Rules, checked on the system prompt and the last user message:
  1. JSON with a schema: the phrase "JSON matching this schema:" (or "...the following schema:")
     followed by a JSON object -> a minimal instance of that schema (see schema_instance).
  2. Classification: a line "Labels: a, b, c" (also "Label:", "Categories:", "Classes:", "One of:",
     items split on "," or "|") -> the text "label: <one of them>" (or {"label": ...} under rule 3).
  3. JSON without a schema: the word "JSON" (upper case) -> ``{"answer": "..."}``.
  4. Otherwise prose whose natural length (16..255 tokens) comes from the prompt digest.
Every choice hashes the prompt only, never the model, so all models agree unless a ``differ`` marker
applies. An answer longer than max_tokens is cut there with stop_reason "max_tokens".

Test markers anywhere in the system prompt or a user message: ``[[mock:KIND]]`` or
``[[mock:KIND:WORD]]`` (only for models whose id contains WORD). Kinds: refuse, bad-json, truncate,
empty, differ, and fault-<kind> (a fault from faults.FAULT_KINDS, e.g. fault-529, fault-timeout).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from worker.sandbox.mock_api.request import ParsedRequest
from worker.sandbox.mock_api.schema_instance import instance_of
from worker.sandbox.mock_api.tokens import CHARS_PER_TOKEN, count_text

_MARKER = re.compile(r"\[\[mock:([a-z0-9-]+)(?::([A-Za-z0-9._-]+))?\]\]")
_SCHEMA_PHRASE = re.compile(r"JSON matching (?:this|the following) schema:?", re.IGNORECASE)
_JSON_WORD = re.compile(r"\bJSON\b")
_LABELS = re.compile(r"^[ \t]*(?:labels?|categories|classes|one of)[ \t]*:[ \t]*(.+)$", re.I | re.M)
_LABEL_WORDS = ("label", "categories", "classes", "one of")
_WORDS = (
    *("the", "model", "reviewed", "request", "and", "found", "answer", "clear", "concise", "result"),
    *("data", "value", "item", "point", "note", "summary", "detail", "context", "example", "reason"),
    *("step", "first", "second", "third", "final", "check", "output", "input", "token"),
)
_DECODER = json.JSONDecoder()
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."


@dataclass(frozen=True, slots=True)
class Answer:
    text: str | None  # None: empty content list
    stop_reason: str
    output_tokens: int
    stop_sequence: str | None = None

    def content(self) -> list[dict[str, Any]]:
        return [] if self.text is None else [{"type": "text", "text": self.text}]


def active_markers(texts: list[str], model: str) -> frozenset[str]:
    found: set[str] = set()
    for text in texts:
        if "[[mock:" not in text:
            continue
        for kind, word in _MARKER.findall(text):
            if not word or word in model:
                found.add(kind)
    return frozenset(found)


def find_schema(text: str) -> dict[str, Any] | None:
    # Plain substring tests first: regexes over a long cached document cost far more.
    if "schema" not in text and "SCHEMA" not in text and "Schema" not in text:
        return None
    for m in _SCHEMA_PHRASE.finditer(text):
        start = text.find("{", m.end())
        if start < 0:
            continue
        try:
            obj, _ = _decode_prefix(text[start:])
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _decode_prefix(text: str) -> tuple[Any, int]:
    return _DECODER.raw_decode(text)


def find_labels(text: str) -> list[str]:
    if ":" not in text:
        return []
    low = text.lower()
    if not any(w in low for w in _LABEL_WORDS):
        return []
    m = _LABELS.search(text)
    if not m:
        return []
    raw = m.group(1).strip().strip("[]().")
    items = [x.strip().strip("'\"`").strip() for x in re.split(r"[,|]", raw)]
    labels = [x for x in items if x]
    return labels if len(labels) >= 2 else []


def _pick(seed: bytes, salt: str, n: int, variant: int) -> int:
    h = hashlib.blake2b(seed + salt.encode(), digest_size=8).digest()
    return (int.from_bytes(h, "little") + variant) % n


def _corpus() -> str:
    # Built once: answers are slices of it, so a long answer costs no per-word Python work.
    x, words, size = 0x9E3779B97F4A7C15, [], 0
    while size < _CORPUS_CHARS + 2048 * CHARS_PER_TOKEN:
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        w = _WORDS[(x >> 33) % len(_WORDS)]
        words.append(w)
        size += len(w) + 1
    return " ".join(words)


_CORPUS_CHARS = 1 << 16
_CORPUS = _corpus()


def prose(seed: bytes, variant: int) -> str:
    h = int.from_bytes(hashlib.blake2b(seed + bytes([variant]), digest_size=8).digest(), "little")
    target_chars = (16 + h % 240) * CHARS_PER_TOKEN
    start = _CORPUS.find(" ", (h >> 16) % _CORPUS_CHARS) + 1
    return _CORPUS[start : start + target_chars - 1].rstrip() + "."


def natural_answer(req: ParsedRequest, variant: int) -> tuple[str, bool]:
    """(answer text, is it JSON)."""
    seed = req.prompt_digest
    places = (req.system_text, req.last_user_text)
    for text in places:
        schema = find_schema(text)
        if schema is not None:
            return orjson.dumps(instance_of(schema, seed, variant)).decode(), True
    labels = next((ls for ls in map(find_labels, places) if ls), [])
    wants_json = any("JSON" in t and _JSON_WORD.search(t) for t in places)
    if labels:
        label = labels[_pick(seed, "label", len(labels), variant)]
        return (orjson.dumps({"label": label}).decode(), True) if wants_json else (f"label: {label}", False)
    if wants_json:
        return orjson.dumps({"answer": prose(seed, variant)}).decode(), True
    return prose(seed, variant), False


def _cut(text: str, tokens: int) -> str:
    return text[: tokens * CHARS_PER_TOKEN]


def make_answer(req: ParsedRequest, markers: frozenset[str], replayed: str | None = None) -> Answer:
    """The answer to ``req``; ``replayed`` (a recorded answer for this prompt and model) wins."""
    if replayed is not None:
        if count_text(replayed) > req.max_tokens:
            return Answer(_cut(replayed, req.max_tokens), "max_tokens", req.max_tokens)
        return Answer(replayed, "end_turn", max(1, count_text(replayed)))
    if "refuse" in markers:
        return Answer(REFUSAL_TEXT, "refusal", count_text(REFUSAL_TEXT))
    if "empty" in markers:
        return Answer(None, "end_turn", 0)
    text, is_json = natural_answer(req, 1 if "differ" in markers else 0)
    if "bad-json" in markers:
        # Prose around a JSON body with its last character missing: fails any strict parse.
        text = "Here is the result: " + (text[:-1] if is_json else "{" + text)
    if "truncate" in markers:
        cut = text if count_text(text) > req.max_tokens else text[: max(1, len(text) // 2)]
        return Answer(_cut(cut, req.max_tokens), "max_tokens", req.max_tokens)
    hits = [(at, stop) for stop in req.stop_sequences if (at := text.find(stop)) >= 0]
    if hits:
        at, stop = min(hits)
        return Answer(text[:at], "stop_sequence", count_text(text[:at]), stop)
    if count_text(text) > req.max_tokens:
        return Answer(_cut(text, req.max_tokens), "max_tokens", req.max_tokens)
    return Answer(text, "end_turn", max(1, count_text(text)))


def message_body(
    message_id: str, model: str, answer: Answer, plan: Any, uncached: int, service_tier: str
) -> dict[str, Any]:
    """A Messages API response body, as the realtime endpoint and a Message Batch result both carry it."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": answer.content(),
        "stop_reason": answer.stop_reason,
        "stop_sequence": answer.stop_sequence,
        "usage": {
            "input_tokens": uncached,
            "output_tokens": answer.output_tokens,
            "cache_creation_input_tokens": plan.write,
            "cache_read_input_tokens": plan.read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": plan.write_5m,
                "ephemeral_1h_input_tokens": plan.write_1h,
            },
            "service_tier": service_tier,
        },
    }
