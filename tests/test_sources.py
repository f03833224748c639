from __future__ import annotations

from pathlib import Path

from jobs.contract import Job, TaskType
from jobs.producer import Located
from jobs.sources import Rejected, read_folder, read_jsonl


def test_jsonl_reports_bad_lines_and_keeps_good_ones(tmp_path: Path) -> None:
    f = tmp_path / "jobs.jsonl"
    f.write_bytes(
        b'{"task":"qa","prompt":"ok 1"}\n'
        b"not json at all\n"
        b'{"task":"dance","prompt":"x"}\n'
        b"\n"
        b'{"task":"qa","prompt":"bad \xff utf8"}\n'
        b'["a list"]\n'
        b'{"task":"qa","prompt":"x","constraints":{"min_tier":"opus","max_tier":"haiku"}}\n'
        b'{"task":"qa","prompt":"ok 2"}\n'
    )
    items = list(read_jsonl(f))
    good = [i.job for i in items if isinstance(i, Located)]
    bad = {r.where: r.reason for r in items if isinstance(r, Rejected)}
    assert [j.prompt for j in good] == ["ok 1", "ok 2"]
    assert [i.where for i in items if isinstance(i, Located)] == ["1", "8"]
    assert set(bad) == {"2", "3", "5", "6", "7"}
    assert "not JSON" in bad["2"]
    assert "task" in bad["3"] and "dance" in bad["3"]
    assert "invalid UTF-8" in bad["5"]
    assert "expected a JSON object" in bad["6"]
    assert "min_tier 'opus' is above max_tier 'haiku'" in bad["7"]
    assert str(Rejected("2", "x")) == "2: x"


def test_folder_makes_one_job_per_document(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Alpha\ntext")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("beta")
    (tmp_path / "empty.txt").write_text("  ")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    items = list(
        read_folder(
            tmp_path,
            task=TaskType.summarize,
            prompt="Summarise",
            system="Be brief",
            tags={"tenant": "t1", "labels": {"k": "v"}},
        )
    )
    jobs: list[Job] = [i.job for i in items if isinstance(i, Located)]
    rejected = {r.where: r.reason for r in items if isinstance(r, Rejected)}
    assert sorted(j.documents[0].name for j in jobs) == ["a.md", "sub/b.txt"]
    assert sorted(j.source or "" for j in jobs) == ["a.md", "sub/b.txt"]
    assert all(
        j.task is TaskType.summarize and j.system == "Be brief" and j.tags.tenant == "t1" for j in jobs
    )
    assert rejected == {"bin.txt": "invalid UTF-8 at byte 0", "empty.txt": "document is empty"}
