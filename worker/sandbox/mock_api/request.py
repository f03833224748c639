"""Validate a Messages request body and reduce it to what the stand-in needs.

One pass over the blocks (tools -> system -> messages) yields the token count, the cache breakpoints
(each with the cumulative token length and a digest of the exact prefix up to and including its block),
a digest of the whole prompt (for deterministic answers) and the texts answers look at.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.sandbox.mock_api.documents import parse_document
from worker.sandbox.mock_api.errors import ApiError, invalid
from worker.sandbox.mock_api.tokens import canonical_json, count_text

MAX_BREAKPOINTS = 4
TTL_SECONDS: dict[str, float] = {"5m": 300.0, "1h": 3600.0}
_ROLES = frozenset(("user", "assistant"))


@dataclass(frozen=True, slots=True)
class Breakpoint:
    end: int  # tokens from the start of the prompt through this block
    ttl: str  # "5m" | "1h"
    key: bytes  # digest of that exact prefix

    @property
    def ttl_s(self) -> float:
        return TTL_SECONDS[self.ttl]


@dataclass(slots=True)
class ParsedRequest:
    model: str
    max_tokens: int
    stop_sequences: tuple[str, ...]
    input_tokens: int
    breakpoints: list[Breakpoint]
    prompt_digest: bytes
    system_text: str
    last_user_text: str
    texts: list[str] = field(default_factory=list)  # every system/user text, for test markers
    documents: Counter[str] = field(default_factory=Counter)  # document blocks by source media type


def decode_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise invalid(f"The request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object")
    return body


class _Walker:
    """Accumulates tokens, digests and breakpoints while blocks are fed in prompt order."""

    def __init__(self) -> None:
        self.tokens = 0
        self.hasher = hashlib.blake2b(digest_size=16)
        self.breakpoints: list[Breakpoint] = []
        self.texts: list[str] = []
        self.seen_5m = False

    def add(self, tag: bytes, text: str, cache_control: Any, where: str) -> None:
        self.add_counted(tag, text.encode(), count_text(text), cache_control, where)

    def add_counted(self, tag: bytes, data: bytes, tokens: int, cache_control: Any, where: str) -> None:
        # Tag and length framing keep distinct block sequences from hashing the same.
        self.hasher.update(tag + len(data).to_bytes(8, "little"))
        self.hasher.update(data)
        self.tokens += tokens
        if cache_control is not None:
            self._breakpoint(cache_control, where)

    def _breakpoint(self, cc: Any, where: str) -> None:
        if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
            raise invalid(f"{where}.cache_control: type must be 'ephemeral'")
        ttl = cc.get("ttl", "5m")
        if ttl not in TTL_SECONDS:
            raise invalid(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
        if ttl == "1h" and self.seen_5m:
            raise invalid(
                "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block "
                "(order: tools, system, messages)"
            )
        self.seen_5m = self.seen_5m or ttl == "5m"
        self.breakpoints.append(Breakpoint(self.tokens, ttl, self.hasher.copy().digest()))


def _block_text(block: Any, where: str) -> tuple[str, bool]:
    """(text used for counting/hashing, is it a text block)."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise invalid(f"{where}: each content block must be an object with a 'type'")
    if block["type"] == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise invalid(f"{where}.text: Field required")
        if not text:
            raise invalid(f"{where}: text content blocks must be non-empty")
        return text, True
    return canonical_json(block), False


def _positive_int(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if value is None:
        raise invalid(f"{name}: Field required")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise invalid(f"{name}: Input should be a positive integer")
    return value


def parse_messages_request(body: dict[str, Any], *, need_max_tokens: bool = True) -> ParsedRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required")
    max_tokens = _positive_int(body, "max_tokens") if need_max_tokens else 0
    if body.get("stream"):
        raise invalid("stream: streaming is not supported by the stand-in API; send stream=false")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: Field required (a non-empty list)")
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise invalid("stop_sequences: Input should be a list of non-empty strings")

    w = _Walker()
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise invalid(f"tools.{i}.name: Field required")
        w.add(b"T", canonical_json(tool), tool.get("cache_control"), f"tools.{i}")

    system = body.get("system")
    system_parts: list[str] = []
    if isinstance(system, str):
        w.add(b"S", system, None, "system")
        system_parts.append(system)
    elif isinstance(system, list):
        for i, block in enumerate(system):
            text, is_text = _block_text(block, f"system.{i}")
            if not is_text:
                raise invalid(f"system.{i}.type: Input should be 'text'")
            w.add(b"S", text, block.get("cache_control"), f"system.{i}")
            system_parts.append(text)
    elif system is not None:
        raise invalid("system: Input should be a valid string or list of text blocks")
    w.texts.extend(system_parts)

    last_user: list[str] = []
    documents: Counter[str] = Counter()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in _ROLES:
            raise invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        role = msg["role"]
        tag = b"U" if role == "user" else b"A"
        w.hasher.update(b"M" + tag)
        content = msg.get("content")
        user_texts: list[str] = []
        if isinstance(content, str):
            w.add(tag, content, None, f"messages.{i}")
            user_texts.append(content)
        elif isinstance(content, list):
            for j, block in enumerate(content):
                where = f"messages.{i}.content.{j}"
                if isinstance(block, dict) and block.get("type") == "document":
                    if role != "user":
                        raise invalid(f"{where}.type: document blocks belong in user messages")
                    doc = parse_document(block, where)
                    # Part of the hashed prefix like any block: the same PDF caches like the same text.
                    w.add_counted(tag + b"D", doc.identity, doc.tokens, block.get("cache_control"), where)
                    documents[doc.media_type] += 1
                    continue
                text, is_text = _block_text(block, where)
                w.add(tag, text, block.get("cache_control"), where)
                if is_text:
                    user_texts.append(text)
        else:
            raise invalid(f"messages.{i}.content: Input should be a valid string or list of blocks")
        if role == "user":
            last_user = user_texts
            w.texts.extend(user_texts)

    if len(w.breakpoints) > MAX_BREAKPOINTS:
        raise invalid(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(w.breakpoints)}."
        )
    return ParsedRequest(
        model=model,
        max_tokens=max_tokens,
        stop_sequences=tuple(stops),
        input_tokens=w.tokens,
        breakpoints=w.breakpoints,
        prompt_digest=w.hasher.digest(),
        system_text="\n".join(system_parts),
        last_user_text="\n".join(last_user),
        texts=w.texts,
        documents=documents,
    )


__all__ = ["MAX_BREAKPOINTS", "TTL_SECONDS", "ApiError", "Breakpoint", "ParsedRequest"]
