"""arq job (de)serialization with orjson instead of pickle.

Pickle would let anyone who can write to Redis run code in every worker; orjson cannot. A payload that
is not even JSON still decodes to a job whose argument carries the damage, so the worker records a clear
failure for that job id instead of arq dropping it with a traceback.
"""

from __future__ import annotations

from typing import Any

import orjson

CORRUPT_MARK = "__routeq_corrupt__"


def serialize(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _corrupt(reason: str) -> dict[str, Any]:
    from jobs.keys import JOB_FUNCTION

    return {"t": 1, "f": JOB_FUNCTION, "k": {}, "et": 0, "a": [{CORRUPT_MARK: reason}]}


def deserialize(raw: bytes) -> Any:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return _corrupt(f"payload in Redis is not valid JSON ({e}); first bytes: {raw[:80]!r}")
    # Valid JSON that is not an arq job document would make arq drop the job with no outcome recorded.
    if not (
        isinstance(doc, dict)
        and isinstance(doc.get("f"), str)
        and isinstance(doc.get("a"), list)
        and doc["a"]
        and isinstance(doc.get("k"), dict)
        and "t" in doc
        and "et" in doc
    ):
        return _corrupt(f"payload in Redis is not an arq job document; first bytes: {raw[:80]!r}")
    return doc


def arq_job_payload(function: str, args: list[Any], kwargs: dict[str, Any], enqueue_time_ms: int) -> bytes:
    """The exact document ``arq.jobs.serialize_job`` writes, so arq workers read what we enqueue in bulk."""
    return orjson.dumps({"t": None, "f": function, "a": args, "k": kwargs, "et": enqueue_time_ms})
