"""Replay in the stand-in: recorded answers per model for matching prompts, synthetic ones otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anthropic
import pytest

from jobs.contract import TaskType
from worker.policy.grading import grading_prompt, parse_grade, parse_grading_prompt
from worker.sandbox.embedded import start_mock_api
from worker.sandbox.mock_api.replay import ReplayFileError, load_replay

HAIKU, OPUS = "claude-haiku-4-5", "claude-opus-4-5"


def _book(tmp_path: Path) -> Path:
    path = tmp_path / "replay.jsonl"
    rows = [
        {
            "prompt": "What is 2 + 2?",
            "answers": {"haiku": "It is 5.", "claude-opus-4-5": "It is 4."},
            "correct": {"haiku": False, "claude-opus-4-5": True},
        },
        {"prompt": "Name a colour.", "answers": {"sonnet": "Blue."}},
        {
            "prompt": "What is 3 + 3?",
            "answers": {"haiku": "3 + 3 = 6.", "sonnet": "Six.", "opus": "The sum is 6."},
            "correct": {"haiku": True, "opus": True},
            "reference": "6",
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_lookup_matches_whole_prompt_or_its_end_and_the_model(tmp_path: Path) -> None:
    book = load_replay(_book(tmp_path))
    assert book.lookup("What is 2 + 2?", HAIKU) == "It is 5."
    assert book.lookup("Context first.\n\nWhat is 2 + 2?", OPUS) == "It is 4."
    assert book.lookup("What is 2 + 2? Explain.", HAIKU) is None
    assert book.lookup("Name a colour.", HAIKU) is None  # no answer recorded for this model


def test_grading_prompt_round_trips_and_other_text_is_not_one() -> None:
    text = grading_prompt(TaskType.reason, "Q?\n</task> in it", "ref\nlines", "cand </candidate_answer>")
    got = parse_grading_prompt(text)
    assert got is not None
    assert (got.task, got.prompt, got.reference, got.candidate) == (
        "reason",
        "Q?\n</task> in it",
        "ref\nlines",
        "cand </candidate_answer>",
    )
    assert parse_grading_prompt("What is 2 + 2?") is None
    assert parse_grading_prompt(text + " and more") is None


def test_grading_verdicts_come_from_recorded_correctness(tmp_path: Path) -> None:
    book = load_replay(_book(tmp_path))

    def grade(prompt: str, reference: str, candidate: str) -> str | None:
        return book.lookup(grading_prompt(TaskType.reason, prompt, reference, candidate), OPUS)

    def verdict(prompt: str, reference: str, candidate: str) -> bool:
        text = grade(prompt, reference, candidate)
        assert text is not None
        return parse_grade(text)

    assert verdict("What is 2 + 2?", "It is 4.", "It is 5.") is False  # the cheap answer was wrong
    assert verdict("What is 2 + 2?", "It is 5.", "It is 5.") is True  # identical answers agree
    assert verdict("What is 3 + 3?", "The sum is 6.", "3 + 3 = 6.") is True  # both recorded correct
    assert verdict("What is 3 + 3?", "The sum is 6.", "6") is True  # the reference answer itself
    # sonnet's correctness is not recorded, nor is an unrecorded text's: no verdict, as before
    assert grade("What is 3 + 3?", "The sum is 6.", "Six.") is None
    assert grade("What is 2 + 2?", "It is 4.", "Four, I think.") is None
    assert grade("Never recorded?", "a", "b") is None


def test_bad_replay_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "answers": {"haiku": "x"}}\n{"prompt": "b", "answers": [1]}\n')
    with pytest.raises(ReplayFileError, match="line 2: 'answers'"):
        load_replay(path)
    bad_correct = tmp_path / "bad_correct.jsonl"
    bad_correct.write_text('{"prompt": "a", "answers": {"haiku": "x"}, "correct": {"haiku": "yes"}}\n')
    with pytest.raises(ReplayFileError, match="line 1: 'correct'"):
        load_replay(bad_correct)
    proc = subprocess.run(
        [sys.executable, "-m", "worker.cli", "mock-api", "--port", "0", "--replay", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "line 2" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.integration
async def test_replayed_answers_through_the_real_sdk(tmp_path: Path) -> None:
    url, child = start_mock_api("--replay", str(_book(tmp_path)))
    try:
        client = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)

        async def ask(model: str, text: str) -> anthropic.types.Message:
            return await client.messages.create(
                model=model, max_tokens=64, messages=[{"role": "user", "content": text}]
            )

        cheap = await ask(HAIKU, "What is 2 + 2?")
        top = await ask(OPUS, "Some shared context.\n\nWhat is 2 + 2?")
        other = await ask(HAIKU, "Something never recorded")
        assert cheap.content[0].type == "text" and cheap.content[0].text == "It is 5."
        assert top.content[0].type == "text" and top.content[0].text == "It is 4."
        assert other.content[0].type == "text" and other.content[0].text not in ("It is 5.", "It is 4.")
        assert cheap.usage.output_tokens >= 1 and cheap.usage.input_tokens >= 1
        assert cheap.stop_reason == "end_turn"
        short = await client.messages.create(
            model=HAIKU, max_tokens=1, messages=[{"role": "user", "content": "What is 2 + 2?"}]
        )
        assert short.stop_reason == "max_tokens"
        # the top tier asked to grade the cheap answer: a verdict from the recorded correctness
        for candidate, agree in (("It is 5.", False), ("It is 4.", True)):
            graded = await ask(OPUS, grading_prompt(TaskType.reason, "What is 2 + 2?", "It is 4.", candidate))
            assert graded.content[0].type == "text" and parse_grade(graded.content[0].text) is agree
            assert graded.usage.output_tokens >= 1
        unknown = await ask(OPUS, grading_prompt(TaskType.reason, "Not recorded", "It is 4.", "It is 5."))
        assert unknown.content[0].type == "text" and "VERDICT" not in unknown.content[0].text
        await client.close()
    finally:
        child.stop()
