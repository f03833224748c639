"""JSONL documents that name a file, ``{"path", "name"?, "mode"?}``, read at enqueue relative to the
JSONL file. The last files read are kept (content included), so lines naming the same file read it
once; the content is stored once per batch in any case (by its hash)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from jobs.contract import Document, PdfMode, TaskType
from jobs.documents import loader
from jobs.documents.limits import DocumentError

_PATH_FIELDS = frozenset(("path", "name", "mode"))
# Files kept in memory while reading one JSONL file (each up to 32 MB).
KEEP_FILES = 16


class PathDocuments:
    """Turns a JSONL line's path documents into documents; a bad file raises ValueError naming it."""

    def __init__(self, base: Path, pdf_mode: PdfMode) -> None:
        self.base = base
        self.pdf_mode = pdf_mode
        self._loaded: OrderedDict[tuple[Path, str, str, str], Document | DocumentError] = OrderedDict()

    def resolve(self, data: dict[str, Any]) -> dict[str, Any]:
        docs = data.get("documents")
        if not isinstance(docs, list) or not any(isinstance(d, dict) and "path" in d for d in docs):
            return data
        task = _task_of(data.get("task"))
        out: list[Any] = []
        for i, d in enumerate(docs):
            out.append(self._one(i, d, task) if isinstance(d, dict) and "path" in d else d)
        return {**data, "documents": out}

    def _one(self, i: int, d: dict[str, Any], task: TaskType | None) -> Document:
        rel = d["path"]
        extra = sorted(set(d) - _PATH_FIELDS)
        if extra:
            raise ValueError(f"documents.{i}: unknown field {extra[0]!r} beside path")
        if not isinstance(rel, str) or not rel:
            raise ValueError(f"documents.{i}.path: expected a non-empty string")
        name, mode = d.get("name", rel), d.get("mode", self.pdf_mode)
        if not isinstance(name, str) or not name:
            raise ValueError(f"documents.{i}.name: expected a non-empty string")
        if mode not in ("native", "text", "auto"):
            raise ValueError(f"documents.{i}.mode: expected 'native', 'text' or 'auto' (got {mode!r})")
        file = self.base / rel
        key = (file, name, mode, task.value if task else "")
        got = self._loaded.get(key)
        if got is None:
            try:
                got = loader.load_file(file, name=name, source=rel, task=task, mode=mode)
            except DocumentError as e:
                got = e
            self._loaded[key] = got
            if len(self._loaded) > KEEP_FILES:
                self._loaded.popitem(last=False)
        else:
            self._loaded.move_to_end(key)
        if isinstance(got, DocumentError):
            raise ValueError(f"{rel}: {got}")
        return got


def _task_of(value: Any) -> TaskType | None:
    try:
        return TaskType(value)
    except ValueError:
        return None
