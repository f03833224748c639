from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.contract import Job
from jobs.sources import explain
from jobs.tiers import Tier


def test_minimal_job_has_defaults() -> None:
    j = Job(task="qa", prompt="What is 2+2?")  # type: ignore[arg-type]
    assert j.version == 1
    assert j.tags.tenant == "default"
    assert j.constraints.low is Tier.haiku and j.constraints.high is Tier.opus
    assert j.output.type == "text"


def test_id_is_content_derived_and_stable() -> None:
    a = Job(task="qa", prompt="x").with_ids("b1")  # type: ignore[arg-type]
    b = Job(task="qa", prompt="x").with_ids("b1")  # type: ignore[arg-type]
    c = Job(task="qa", prompt="y").with_ids("b1")  # type: ignore[arg-type]
    d = Job(task="qa", prompt="x").with_ids("b2")  # type: ignore[arg-type]
    assert a.job_id == b.job_id
    assert a.job_id != c.job_id
    assert a.job_id != d.job_id  # the batch is part of the identity
    # trace context is transport, not content
    e = a.model_copy(update={"trace_context": {"traceparent": "00-abc"}})
    assert Job(**{**e.model_dump(by_alias=True), "id": None}).with_ids("b1").job_id == a.job_id


def test_given_id_is_scoped_to_its_batch() -> None:
    a = Job(task="qa", prompt="x", id="mine-1").with_ids("b")  # type: ignore[arg-type]
    b = Job(task="qa", prompt="other", id="mine-1").with_ids("b")  # type: ignore[arg-type]
    c = Job(task="qa", prompt="x", id="mine-1").with_ids("c")  # type: ignore[arg-type]
    assert a.id == "mine-1"  # the caller's id is kept as given
    assert a.job_id == b.job_id != c.job_id  # the internal id: the batch and the caller's id only
    assert a.job_id.startswith("i") and "mine" not in a.job_id and len(a.job_id) == 32


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"task": "poetry", "prompt": "x"}, "task"),
        ({"task": "qa", "prompt": "   "}, "prompt is empty"),
        ({"task": "qa", "prompt": 3}, "prompt"),
        (
            {"task": "qa", "prompt": "x", "constraints": {"min_tier": "opus", "max_tier": "haiku"}},
            "above max_tier",
        ),
        ({"task": "qa", "prompt": "x", "constraints": {"tier": "gpt"}}, "constraints.tier"),
        (
            {"task": "qa", "prompt": "x", "constraints": {"tier": "opus", "max_tier": "sonnet"}},
            "above max_tier",
        ),
        (
            {"task": "qa", "prompt": "x", "output": {"type": "json", "schema": {"type": "nope"}}},
            "not a valid JSON Schema",
        ),
        (
            {"task": "qa", "prompt": "x", "output": {"type": "text", "schema": {"type": "object"}}},
            'needs type "json"',
        ),
        ({"task": "qa", "prompt": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"task": "qa", "prompt": "x", "documents": [{"name": "a", "text": ""}]}, "documents.0.text"),
        (
            {
                "task": "qa",
                "prompt": "x",
                "documents": [{"name": "a", "text": "1"}, {"name": "a", "text": "2"}],
            },
            "distinct",
        ),
        ({"task": "qa", "prompt": "x", "colour": "red"}, "colour: unknown field"),
        ({"task": "qa", "prompt": "x", "tags": {"tenant": "a b"}}, "tags.tenant"),
    ],
)
def test_invalid_jobs_name_the_problem(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as ei:
        Job.model_validate(data)
    assert fragment in explain(ei.value)


def test_wire_round_trip() -> None:
    j = Job.model_validate(
        {
            "task": "extract",
            "prompt": "p",
            "documents": [{"name": "d", "text": "t"}],
            "output": {"type": "json", "schema": {"type": "object"}},
            "tags": {"tenant": "t1", "labels": {"k": "v"}},
        }
    ).with_ids("b")
    assert Job.from_wire(j.to_wire()) == j


def test_placed_wire_matches_with_ids() -> None:
    j = Job.model_validate({"task": "qa", "prompt": "p", "tags": {"labels": {"a": "b"}}})
    for tenant in (None, "t9"):
        assert j.placed_wire("b7", tenant) == j.with_ids("b7", tenant).to_wire()
    given = Job.model_validate({"task": "qa", "prompt": "p", "id": "mine", "tags": {"batch": "own"}})
    assert given.placed_wire("b7") == given.with_ids("b7").to_wire()


def test_settings_repr_hides_secrets() -> None:
    from jobs.settings import Settings

    s = Settings(redis_url="redis://:hunter2-pass@redis:6379/0", anthropic_api_key="sk-ant-secret-xyz")
    assert "hunter2-pass" not in repr(s) and "hunter2-pass" not in str(s)
    assert "sk-ant-secret-xyz" not in repr(s)
    assert s.anthropic_api_key is not None and s.anthropic_api_key.get_secret_value() == "sk-ant-secret-xyz"
