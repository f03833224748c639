"""Replay in the stand-in: recorded answers per model for matching prompts, synthetic ones otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anthropic
import pytest

from worker.sandbox.embedded import start_mock_api
from worker.sandbox.mock_api.replay import ReplayFileError, load_replay

HAIKU, OPUS = "claude-haiku-4-5", "claude-opus-4-5"


def _book(tmp_path: Path) -> Path:
    path = tmp_path / "replay.jsonl"
    rows = [
        {"prompt": "What is 2 + 2?", "answers": {"haiku": "It is 5.", "claude-opus-4-5": "It is 4."}},
        {"prompt": "Name a colour.", "answers": {"sonnet": "Blue."}},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_lookup_matches_whole_prompt_or_its_end_and_the_model(tmp_path: Path) -> None:
    book = load_replay(_book(tmp_path))
    assert book.lookup("What is 2 + 2?", HAIKU) == "It is 5."
    assert book.lookup("Context first.\n\nWhat is 2 + 2?", OPUS) == "It is 4."
    assert book.lookup("What is 2 + 2? Explain.", HAIKU) is None
    assert book.lookup("Name a colour.", HAIKU) is None  # no answer recorded for this model


def test_bad_replay_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "answers": {"haiku": "x"}}\n{"prompt": "b", "answers": [1]}\n')
    with pytest.raises(ReplayFileError, match="line 2: 'answers'"):
        load_replay(path)
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
        await client.close()
    finally:
        child.stop()
