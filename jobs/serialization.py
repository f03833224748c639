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


def deserialize(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        from jobs.keys import JOB_FUNCTION

        return {
            "t": 1, "f": JOB_FUNCTION, "k": {}, "et": 0,
            "a": [{CORRUPT_MARK: f"payload in Redis is not valid JSON ({e}); first bytes: {raw[:80]!r}"}],
        }


def arq_job_payload(function: str, args: list[Any], kwargs: dict[str, Any], enqueue_time_ms: int) -> bytes:
    """The exact document ``arq.jobs.serialize_job`` writes, so arq workers read what we enqueue in bulk."""
    return orjson.dumps({"t": None, "f": function, "a": args, "k": kwargs, "et": enqueue_time_ms})
