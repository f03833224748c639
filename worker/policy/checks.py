"""Answer checks: did the model's answer do what the job asked? Pure functions, no I/O.

``check_answer`` returns the names of the failed checks among those enabled; the pipeline escalates
or retries on them (worker/policy/faults.py). Check names match ``jobs.settings.Check``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator

from jobs.contract import OutputFormat

ALL_CHECKS: tuple[str, ...] = ("json", "schema", "max_tokens", "refusal", "empty")

# A whole answer wrapped in one fenced block (```json ... ``` or ``` ... ```), as models often reply.
_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)
# Refusal openers: only the start of the answer is looked at, so an answer that discusses refusals
# (or quotes "I can't") further on is not flagged.
_REFUSAL = re.compile(
    r"^\W*(?:i(?:'m| am)\s+(?:sorry|unable|not able)|sorry,?\s+(?:but\s+)?i\s+(?:can(?:no|')t|won't)|"
    r"i\s+(?:can(?:no|')t|won't|will not|must decline|am not comfortable)\s+"
    r"(?:help|assist|provide|comply|do that|fulfil|fulfill|complete|create|write|answer)|"
    r"i\s+apologi[sz]e,?\s+but\s+i)",
    re.IGNORECASE,
)


class NotJSON(ValueError):
    """The answer holds no parseable JSON."""


def parse_json_output(text: str) -> Any:
    """The JSON value in an answer: the whole text, or the body of one fenced code block around it."""
    body = text.strip()
    m = _FENCE.match(body)
    if m:
        body = m.group(1).strip()
    try:
        return json.loads(body)
    except (json.JSONDecodeError, RecursionError) as e:
        raise NotJSON(str(e)) from None


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.match(text[:200]))


def check_answer(
    text: str | None,
    stop_reason: str | None,
    output_format: OutputFormat,
    enabled: list[str],
) -> list[str]:
    """Failed check names, in ``ALL_CHECKS`` order. Unknown names in ``enabled`` are ignored."""
    on = set(enabled)
    failed: list[str] = []
    blank = text is None or not text.strip()

    wants_json = output_format.type == "json"
    value: Any = None
    parsed = False
    if wants_json and not blank and ("json" in on or "schema" in on):
        try:
            value = parse_json_output(text or "")
            parsed = True
        except NotJSON:
            pass

    # A blank answer is not JSON either: it fails "json"/"schema" as well as "empty", so a policy that
    # enables only the JSON checks still catches it.
    if "json" in on and wants_json and not parsed:
        failed.append("json")
    schema = output_format.json_schema
    # Unparseable JSON cannot satisfy a schema either; flagging both lets policy key on either name.
    if (
        "schema" in on
        and schema is not None
        and (not parsed or next(Draft202012Validator(schema).iter_errors(value), None) is not None)
    ):
        failed.append("schema")
    if "max_tokens" in on and stop_reason == "max_tokens":
        failed.append("max_tokens")
    if "refusal" in on and (stop_reason == "refusal" or (not blank and is_refusal(text or ""))):
        failed.append("refusal")
    if "empty" in on and blank:
        failed.append("empty")
    return failed
