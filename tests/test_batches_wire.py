"""Job documents stay readable by workers from before batch mode: unset new constraints are left out.

A worker's ``Job`` forbids unknown fields, so a document that always carried ``constraints.mode``,
``deadline`` and ``strategy`` (even as null) was refused by every older worker. Real redis-server, the
producer's own bulk path.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ConfigDict, create_model

from jobs.connections import connect
from jobs.contract import Constraints, Job, content_digest
from jobs.keys import ARQ_JOB_PREFIX
from jobs.producer import Producer
from jobs.schedule import deadline_epoch
from jobs.settings import Settings
from jobs.sources import parse_job

NEW = {"mode", "deadline", "strategy"}


def older_constraints() -> Any:
    """Constraints as a worker from before these fields reads them: anything unknown is an error."""
    fields: dict[str, Any] = {
        k: (f.annotation, f.default) for k, f in Constraints.model_fields.items() if k not in NEW
    }
    return create_model("OldConstraints", __config__=ConfigDict(extra="forbid"), **fields)


async def payload(redis: Any, job_id: str) -> dict[str, Any]:
    doc = orjson.loads(await redis.get(ARQ_JOB_PREFIX + job_id))
    wire: dict[str, Any] = doc["a"][0]
    return wire


async def test_plain_job_omits_new_constraints_and_a_job_with_them_round_trips(redis_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    plain = parse_job({"id": "plain", "task": "summarize", "prompt": "Summarise: it rained."})
    full = parse_job(
        {
            "id": "full",
            "task": "summarize",
            "prompt": "Summarise: it rained.",
            "constraints": {"mode": "auto", "deadline": "6h", "strategy": "cascade", "max_tier": "sonnet"},
        }
    )
    try:
        res = await Producer(redis, s).enqueue([plain, full], batch="wire")
        got_plain, got_full = [await payload(redis, j) for j in res.job_ids]
    finally:
        await redis.aclose()
    assert not NEW & got_plain["constraints"].keys(), got_plain["constraints"]
    older_constraints().model_validate(got_plain["constraints"])  # what an older worker accepts
    assert Job.from_wire(got_plain).constraints == plain.constraints
    c = Job.from_wire(got_full).constraints
    assert (c.mode, c.strategy, c.max_tier) == ("auto", "cascade", full.constraints.max_tier)
    assert c.deadline is not None and deadline_epoch(c.deadline, 0.0) > 0  # pinned to a time at enqueue
    assert Job.from_wire(Job.from_wire(got_full).to_wire()) == Job.from_wire(got_full)


def test_to_wire_omits_them_too_and_ids_do_not_change() -> None:
    plain = parse_job({"task": "summarize", "prompt": "Summarise: it rained."})
    wire = plain.to_wire()
    assert not NEW & wire["constraints"].keys()
    assert Job.from_wire(wire) == plain
    # The id of a job without an id is its content digest, computed as before (nulls included), so a
    # job enqueued again after an upgrade is still the same job.
    full = plain.model_dump(mode="json", by_alias=True)
    full["tags"]["batch"] = "b"
    assert full["constraints"]["strategy"] is None  # the digest's input keeps the nulls
    assert plain.with_ids("b").job_id == "j" + content_digest(full)[:31]
