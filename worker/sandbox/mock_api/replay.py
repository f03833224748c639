"""Recorded answers replayed by the stand-in (``routeq mock-api --replay FILE.jsonl``).

Each line: ``{"prompt": "...", "answers": {"haiku": "...", "claude-opus-4-5": "..."}}``; a key is a tier
word (matched when the model id contains it) or an exact model id. A request whose last user turn's
text equals or ends with a recorded prompt is answered with that prompt's text for the model.

A line may also say which answers were right: ``"correct": {"haiku": false, "opus": true}`` (same keys
as ``answers``) and ``"reference"``, a known-good answer text. Then a shadow check's grading request
(``worker.policy.grading.grading_prompt``) about that prompt is answered with a verdict: AGREE when the
graded answer is the reference answer's text, or when both are recorded as correct; else DISAGREE. An
answer whose correctness the line does not record gets no verdict (a synthetic answer, as before).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from worker.policy.grading import GradingRequest, parse_grading_prompt


class ReplayFileError(ValueError):
    """A replay file line that is not a recorded prompt and its answers."""


@dataclass(frozen=True, slots=True)
class Recorded:
    answers: dict[str, str]
    correct: dict[str, bool] = field(default_factory=dict)
    reference: str | None = None

    def answer_for(self, model: str) -> str | None:
        if model in self.answers:
            return self.answers[model]
        return next((text for key, text in self.answers.items() if key in model), None)

    def is_correct(self, text: str) -> bool | None:
        """Whether ``text`` is right, as far as the line records it (None: not recorded)."""
        t = text.strip()
        if self.reference is not None and t == self.reference.strip():
            return True
        for key, recorded in self.answers.items():
            if recorded.strip() == t and key in self.correct:
                return self.correct[key]
        return None


@dataclass(slots=True)
class ReplayBook:
    answers: dict[str, Recorded] = field(default_factory=dict)
    # Longest first, so a prompt that ends with a shorter recorded prompt finds its own entry first.
    _by_length: list[str] = field(default_factory=list)

    def add(
        self,
        prompt: str,
        answers: dict[str, str],
        correct: dict[str, bool] | None = None,
        reference: str | None = None,
    ) -> None:
        if prompt not in self.answers:
            self._by_length.append(prompt)
        self.answers[prompt] = Recorded(answers, correct or {}, reference)
        self._by_length.sort(key=len, reverse=True)  # timsort: near-linear on an already sorted list

    def _entry(self, last_user_text: str) -> Recorded | None:
        got = self.answers.get(last_user_text)
        if got is not None:
            return got
        text = last_user_text.rstrip()
        for prompt in self._by_length:
            if len(prompt) <= len(text) and text.endswith(prompt.rstrip()):
                return self.answers[prompt]
        return None

    def recorded(self, prompt: str) -> Recorded | None:
        """The line recorded for ``prompt`` (or for the end of it)."""
        return self._entry(prompt)

    def lookup(self, last_user_text: str, model: str) -> str | None:
        """The recorded answer for this request, or a grading verdict from the recorded correctness."""
        entry = self._entry(last_user_text)
        if entry is not None:
            return entry.answer_for(model)
        grading = parse_grading_prompt(last_user_text)
        return None if grading is None else self.verdict(grading)

    def verdict(self, grading: GradingRequest) -> str | None:
        entry = self._entry(grading.prompt)
        if entry is None:
            return None
        if grading.candidate.strip() == grading.reference.strip():
            agree = True
        else:
            cand, ref = entry.is_correct(grading.candidate), entry.is_correct(grading.reference)
            if cand is None or ref is None:
                return None
            agree = cand and ref
        return f"Graded from the replayed record.\nVERDICT: {'AGREE' if agree else 'DISAGREE'}"

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
            if not isinstance(row, dict):
                raise ReplayFileError(f"{path}: line {n}: not a JSON object")
            prompt, answers = row.get("prompt"), row.get("answers")
            correct, reference = row.get("correct", {}), row.get("reference")
            if not isinstance(prompt, str) or not prompt.strip():
                raise ReplayFileError(f"{path}: line {n}: 'prompt' must be a non-empty string")
            if not isinstance(answers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in answers.items()
            ):
                raise ReplayFileError(f"{path}: line {n}: 'answers' must map model names to strings")
            if not isinstance(correct, dict) or not all(
                isinstance(k, str) and isinstance(v, bool) for k, v in correct.items()
            ):
                raise ReplayFileError(f"{path}: line {n}: 'correct' must map model names to true/false")
            if reference is not None and not isinstance(reference, str):
                raise ReplayFileError(f"{path}: line {n}: 'reference' must be a string")
            book.add(prompt, answers, correct, reference)
    return book
