"""Answer checks."""

from __future__ import annotations

import pytest

from jobs.contract import OutputFormat
from worker.policy.checks import ALL_CHECKS, NotJSON, check_answer, parse_json_output

TEXT = OutputFormat()
JSON = OutputFormat(type="json")
SCHEMA = OutputFormat(
    type="json",
    schema={"type": "object", "properties": {"label": {"enum": ["a", "b"]}}, "required": ["label"]},
)
ALL = list(ALL_CHECKS)


def test_good_text_answer_passes() -> None:
    assert check_answer("Paris is the capital.", "end_turn", TEXT, ALL) == []


def test_json_plain_and_fenced() -> None:
    assert check_answer('{"label": "a"}', "end_turn", SCHEMA, ALL) == []
    assert check_answer('```json\n{"label": "b"}\n```', "end_turn", SCHEMA, ALL) == []
    assert parse_json_output("```\n[1, 2]\n```") == [1, 2]


def test_not_json_fails_json_and_schema() -> None:
    assert check_answer("label: a", "end_turn", SCHEMA, ALL) == ["json", "schema"]
    assert check_answer("label: a", "end_turn", JSON, ALL) == ["json"]
    with pytest.raises(NotJSON):
        parse_json_output("Here it is: {")


def test_schema_violation() -> None:
    assert check_answer('{"label": "c"}', "end_turn", SCHEMA, ALL) == ["schema"]
    assert check_answer('{"other": 1}', "end_turn", SCHEMA, ALL) == ["schema"]


def test_text_format_ignores_json_checks() -> None:
    assert check_answer("not json at all", "end_turn", TEXT, ALL) == []


def test_max_tokens_and_refusal_stop_reasons() -> None:
    assert check_answer("The answer is", "max_tokens", TEXT, ALL) == ["max_tokens"]
    assert check_answer("x", "refusal", TEXT, ALL) == ["refusal"]


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I cannot assist with this request.",
        "Sorry, I can't do that.",
        "I apologize, but I won't write that.",
    ],
)
def test_refusal_openers(text: str) -> None:
    assert check_answer(text, "end_turn", TEXT, ALL) == ["refusal"]


def test_refusal_words_later_in_the_answer_are_fine() -> None:
    text = "The customer wrote: 'I cannot help with that, sorry.' Classification: complaint."
    assert check_answer(text, "end_turn", TEXT, ALL) == []


def test_empty_answers() -> None:
    assert check_answer("   \n", "end_turn", TEXT, ALL) == ["empty"]
    assert check_answer(None, "end_turn", TEXT, ALL) == ["empty"]
    assert check_answer("", "end_turn", SCHEMA, ALL) == ["json", "schema", "empty"]


def test_only_enabled_checks_run() -> None:
    assert check_answer("", "max_tokens", SCHEMA, ["max_tokens"]) == ["max_tokens"]
    assert check_answer("nope", "end_turn", SCHEMA, ["schema", "bogus"]) == ["schema"]
    assert check_answer("nope", "end_turn", SCHEMA, []) == []
