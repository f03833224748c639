"""Where bulk jobs come from: a JSONL file (one job a line), one document, or a folder of documents
(PDF, HTML, DOCX, text; ``jobs.documents.loader`` reads each). JSONL jobs may name files,
``documents: [{"path": ...}]``, read at enqueue relative to the JSONL file.

Readers never stop at a bad line: they yield a ``Rejected`` naming the line (or file) and the reason,
and carry on, so every valid job is still enqueued. Each job comes as a ``Located`` naming where it was
read, so a later refusal (too large, a taken id) names that place too. Every input is read once, so a
pipe (``/dev/stdin``, a FIFO) works like a file.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from jobs.contract import Job, PdfMode, TaskType
from jobs.documents import loader
from jobs.documents.limits import DocumentError
from jobs.documents.references import PathDocuments
from jobs.producer import Located

DOC_SUFFIXES = loader.SUFFIXES
BOM = b"\xef\xbb\xbf"
DEFAULT_TASK = TaskType.summarize


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


def merge_defaults(data: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``data`` over ``defaults``; tags and their labels are merged key by key, the line winning."""
    merged = {**defaults, **data}
    dtags, tags = defaults.get("tags"), data.get("tags")
    if isinstance(dtags, dict) and isinstance(tags, dict):
        merged["tags"] = {**dtags, **tags}
        dl, ll = dtags.get("labels"), tags.get("labels")
        if isinstance(dl, dict) and isinstance(ll, dict):
            merged["tags"]["labels"] = {**dl, **ll}
    return merged


def parse_job(data: Any, defaults: dict[str, Any] | None = None) -> Job:
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    if "internal_id" in data:
        raise ValueError("internal_id: set by routeq, not by the caller (give your name for the job as id)")
    if defaults:
        data = merge_defaults(data, defaults)
    return Job.model_validate(data)


def read_jsonl(
    path: Path, defaults: dict[str, Any] | None = None, *, pdf_mode: PdfMode = "auto"
) -> Iterator[Located | Rejected]:
    files = PathDocuments(path.parent, pdf_mode)
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if n == 1:
                raw = raw.removeprefix(BOM)
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
                    data = files.resolve(merge_defaults(data, defaults or {}))
                yield Located(str(n), parse_job(data, defaults))
            except ValidationError as e:
                yield Rejected(str(n), explain(e))
            except ValueError as e:
                yield Rejected(str(n), str(e))


def _document_job(
    path: Path,
    name: str,
    *,
    task: TaskType,
    prompt: str,
    system: str | None,
    tags: dict[str, Any],
    pdf_mode: PdfMode = "auto",
) -> Located | Rejected:
    try:
        doc = loader.load_file(path, name=name, source=name, task=task, mode=pdf_mode)
    except DocumentError as e:
        return Rejected(name, str(e))
    except OSError as e:
        return Rejected(name, f"cannot read: {e.strerror or e}")
    try:
        job = Job(
            task=task,
            prompt=prompt,
            system=system,
            source=name,
            documents=(doc,),
            tags=tags,  # type: ignore[arg-type]
        )
    except ValidationError as e:
        return Rejected(name, explain(e))
    return Located(name, job)


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file of a folder that is not a job, and why."""

    path: str  # relative to the folder
    why: str

    def __str__(self) -> str:
        return f"{self.path}: skipped ({self.why})"


def folder_files(folder: Path) -> tuple[list[Path], list[Skipped]]:
    """The document files of a folder (sorted), and the files skipped (hidden, or of another type)."""
    docs: list[Path] = []
    skipped: list[Skipped] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if _hidden(rel):
            skipped.append(Skipped(str(rel), "hidden"))
        elif not loader.supported(path):
            skipped.append(Skipped(str(rel), "not a supported document type"))
        else:
            docs.append(path)
    return docs, skipped


def read_folder(
    folder: Path,
    *,
    task: TaskType,
    prompt: str,
    system: str | None,
    tags: dict[str, Any],
    pdf_mode: PdfMode = "auto",
    skipped: list[str] | None = None,
) -> Iterator[Located | Rejected]:
    """Each document file becomes one job: the shared prompt/system applied to that document.

    The relative paths of files that are not jobs are appended to ``skipped``.
    """
    docs, passed_over = folder_files(folder)
    if skipped is not None:
        skipped.extend(s.path for s in passed_over)
    for path in docs:
        rel = str(path.relative_to(folder))
        yield _document_job(path, rel, task=task, prompt=prompt, system=system, tags=tags, pdf_mode=pdf_mode)


def is_document(path: Path) -> bool:
    return loader.supported(path)


class InputError(ValueError):
    """The input as a whole cannot be enqueued (e.g. a folder with no documents): one line, exit 1."""


@dataclass
class Input:
    """What one ``routeq enqueue PATH`` reads: the items, a total for progress (None for a pipe), and
    what a folder skipped."""

    items: Iterator[Located | Rejected]
    total: int | None
    skipped: list[Skipped] = field(default_factory=list)
    kind: str = "file"


def _regular_file(path: Path) -> bool:
    return stat.S_ISREG(path.stat().st_mode)


def open_input(
    path: Path,
    *,
    task: TaskType | None,
    prompt: str | None,
    system: str | None,
    tags: dict[str, Any],
    pdf_mode: PdfMode = "auto",
) -> Input:
    """The jobs at ``path``. ``task``/``prompt``/``system``/``tags`` make the job of each document of a
    folder or a single document; for a JSONL file they are defaults for lines that lack them."""
    if path.is_dir():
        if not prompt:
            raise InputError("a folder needs --prompt (what to do with each document)")
        docs, skipped = folder_files(path)
        if not docs:
            raise InputError(f"no documents ({', '.join(DOC_SUFFIXES)} files) in folder {path}")
        items = read_folder(
            path, task=task or DEFAULT_TASK, prompt=prompt, system=system, tags=tags, pdf_mode=pdf_mode
        )
        return Input(items, len(docs), skipped, kind="folder")
    regular = _regular_file(path)
    if regular and path.stat().st_size == 0:
        raise InputError(f"{path} is empty: nothing to enqueue")
    if is_document(path):
        if not prompt:
            raise InputError(f"{path.name} is one document: give --prompt (what to do with it)")
        one = _document_job(
            path,
            path.name,
            task=task or DEFAULT_TASK,
            prompt=prompt,
            system=system,
            tags=tags,
            pdf_mode=pdf_mode,
        )
        return Input(iter([one]), 1, kind="document")
    defaults: dict[str, Any] = {}
    if task is not None:
        defaults["task"] = task.value
    if prompt:
        defaults["prompt"] = prompt
    if system:
        defaults["system"] = system
    if tags.get("labels") or len(tags) > 1:
        defaults["tags"] = tags
    items_ = read_jsonl(path, defaults, pdf_mode=pdf_mode)
    return Input(items_, count_lines(path) if regular else None)


def count_lines(path: Path) -> int:
    if path.is_dir():
        return len(folder_files(path)[0])
    with path.open("rb") as f:
        return sum(1 for _ in f)
