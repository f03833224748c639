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

from jobs.contract import Job, PdfMode, TaskType
from jobs.documents import loader
from jobs.documents.limits import DocumentError
from jobs.documents.references import PathDocuments

DOC_SUFFIXES = loader.SUFFIXES


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


def read_jsonl(
    path: Path, defaults: dict[str, Any] | None = None, *, pdf_mode: PdfMode = "auto"
) -> Iterator[Job | Rejected]:
    files = PathDocuments(path.parent, pdf_mode)
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
