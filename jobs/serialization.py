"""arq job (de)serialization with orjson instead of pickle.

Pickle would let anyone who can write to Redis run code in every worker; orjson cannot. A payload that
is not even JSON still decodes to a job whose argument carries the damage, so the worker records a clear
failure for that job id instead of arq dropping it with a traceback.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio.client import Pipeline

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


def queue_arq_job(
    pipe: Pipeline,
    *,
    queue: str,
    job_id: str,
    function: str,
    args: list[Any],
    kwargs: dict[str, Any],
    expiry_ms: int,
    now_ms: int,
    replace: bool = False,
) -> None:
    """Queue, in ``pipe``, the two writes of arq's ``enqueue_job``: the job document and its queue entry.

    Every single-job write goes through here (parking on a tier queue, shadow runs, ``routeq retry``); the
    bulk producer's ``jobs/lua/enqueue.lua`` writes the same document for many jobs at once. Without
    ``replace`` an existing document or entry is kept, so a re-run adds nothing twice.
    """
    from jobs.keys import ARQ_JOB_PREFIX

    doc = arq_job_payload(function, args, kwargs, now_ms)
    pipe.set(ARQ_JOB_PREFIX + job_id, doc, px=expiry_ms, nx=not replace)
    pipe.zadd(queue, {job_id: now_ms}, nx=not replace)
