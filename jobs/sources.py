"""Where bulk jobs come from: a JSONL file (one job a line) or a folder of documents (PDF, HTML, DOCX,
text; ``jobs.documents.loader`` reads each). JSONL jobs may name files, ``documents: [{"path": ...}]``,
read at enqueue relative to the JSONL file.

Readers never stop at a bad line: they yield a ``Rejected`` naming the line (or file) and the reason,
and carry on, so every valid job is still enqueued.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from jobs.contract import Document, Job, PdfMode, TaskType
from jobs.documents import loader
from jobs.documents.limits import DocumentError

DOC_SUFFIXES = loader.SUFFIXES
_PATH_FIELDS = frozenset(("path", "name", "mode"))


@dataclass(frozen=True, slots=True)
class Rejected:
    where: str  # "LINE" number for JSONL, file path for folders
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def explain(e: ValidationError) -> str:
    """One line per problem, each naming the field path, e.g. `constraints: min_tier 'opus' is above ...`."""
    parts = []
    for err in e.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(job)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "enum":
            msg = f"{msg} (got {err.get('input')!r})"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_job(data: Any, defaults: dict[str, Any] | None = None) -> Job:
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    if defaults:
        data = {**defaults, **data}
    return Job.model_validate(data)


class _PathDocuments:
    """Resolves ``{"path", "name"?, "mode"?}`` documents of JSONL lines; each file is read once."""

    def __init__(self, base: Path, pdf_mode: PdfMode) -> None:
        self.base = base
        self.pdf_mode = pdf_mode
        self._loaded: dict[tuple[Path, str, str, str], Document | DocumentError] = {}

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
        if key not in self._loaded:
            try:
                self._loaded[key] = loader.load_file(file, name=name, source=rel, task=task, mode=mode)
            except DocumentError as e:
                self._loaded[key] = e
        got = self._loaded[key]
        if isinstance(got, DocumentError):
            raise ValueError(f"{rel}: {got}")
        return got


def _task_of(value: Any) -> TaskType | None:
    try:
        return TaskType(value)
    except ValueError:
        return None


def read_jsonl(
    path: Path, defaults: dict[str, Any] | None = None, *, pdf_mode: PdfMode = "auto"
) -> Iterator[Job | Rejected]:
    files = _PathDocuments(path.parent, pdf_mode)
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Rejected(str(n), f"invalid UTF-8 at byte {e.start}")
                continue
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                yield Rejected(str(n), f"not JSON: {e}")
                continue
            try:
                if isinstance(data, dict):
                    data = files.resolve({**(defaults or {}), **data})
                yield parse_job(data, defaults)
            except ValidationError as e:
                yield Rejected(str(n), explain(e))
            except ValueError as e:
                yield Rejected(str(n), str(e))


def read_folder(
    folder: Path,
    *,
    task: TaskType,
    prompt: str,
    system: str | None,
    tags: dict[str, Any],
    pdf_mode: PdfMode = "auto",
    skipped: list[str] | None = None,
) -> Iterator[Job | Rejected]:
    """Each document file becomes one job: the shared prompt/system applied to that document.

    Files of other types are not jobs: their relative paths are appended to ``skipped``.
    """
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(path.relative_to(folder))
        if not loader.supported(path):
            if skipped is not None:
                skipped.append(rel)
            continue
        try:
            doc = loader.load_file(path, name=rel, source=rel, task=task, mode=pdf_mode)
        except DocumentError as e:
            yield Rejected(rel, str(e))
            continue
        try:
            yield Job(
                task=task,
                prompt=prompt,
                system=system,
                documents=(doc,),
                tags=tags,  # type: ignore[arg-type]
            )
        except ValidationError as e:
            yield Rejected(rel, explain(e))


def count_lines(path: Path) -> int:
    if path.is_dir():
        return sum(1 for p in path.rglob("*") if p.is_file() and loader.supported(p))
    with path.open("rb") as f:
        return sum(1 for _ in f)
