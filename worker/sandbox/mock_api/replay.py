"""Recorded answers replayed by the stand-in (``routeq mock-api --replay FILE.jsonl``).

Each line: ``{"prompt": "...", "answers": {"haiku": "...", "claude-opus-4-5": "..."}}``; a key is a tier
word (matched when the model id contains it) or an exact model id. A request whose last user turn's
text equals or ends with a recorded prompt is answered with that prompt's text for the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson


class ReplayFileError(ValueError):
    """A replay file line that is not a recorded prompt and its answers."""


@dataclass(slots=True)
class ReplayBook:
    answers: dict[str, dict[str, str]] = field(default_factory=dict)
    # Longest first, so a prompt that ends with a shorter recorded prompt finds its own entry first.
    _by_length: list[str] = field(default_factory=list)

    def add(self, prompt: str, answers: dict[str, str]) -> None:
        if prompt not in self.answers:
            self._by_length.append(prompt)
        self.answers[prompt] = answers
        self._by_length.sort(key=len, reverse=True)  # timsort: near-linear on an already sorted list

    def _entry(self, last_user_text: str) -> dict[str, str] | None:
        got = self.answers.get(last_user_text)
        if got is not None:
            return got
        text = last_user_text.rstrip()
        for prompt in self._by_length:
            if len(prompt) <= len(text) and text.endswith(prompt.rstrip()):
                return self.answers[prompt]
        return None

    def lookup(self, last_user_text: str, model: str) -> str | None:
        entry = self._entry(last_user_text)
        if entry is None:
            return None
        if model in entry:
            return entry[model]
        return next((text for key, text in entry.items() if key in model), None)

    def __len__(self) -> int:
        return len(self.answers)


def load_replay(path: str | Path) -> ReplayBook:
    book = ReplayBook()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise ReplayFileError(f"{path}: line {n}: not JSON ({e})") from None
            prompt = row.get("prompt") if isinstance(row, dict) else None
            answers = row.get("answers") if isinstance(row, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise ReplayFileError(f"{path}: line {n}: 'prompt' must be a non-empty string")
            if not isinstance(answers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in answers.items()
            ):
                raise ReplayFileError(f"{path}: line {n}: 'answers' must map model names to strings")
            book.add(prompt, answers)
    return book
