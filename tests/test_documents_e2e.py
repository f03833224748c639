"""Documents end to end: real redis-server, real worker processes, the real SDK against the stand-in.

A folder of PDFs, HTML, DOCX and text files becomes one job per document (bad files refused by name,
other types listed); PDFs reach the stand-in as document blocks in native mode and as text in text mode;
one PDF shared by many jobs is written to the cache once and read by the rest; and it is stored once
per batch in Redis, whatever the number of jobs carrying it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
from arq.jobs import deserialize_job

from jobs.connections import connect
from jobs.contract import TaskType
from jobs.documents.limits import PDF_TOKENS_PER_PAGE
from jobs.keys import ARQ_JOB_PREFIX, JOB_FUNCTION
from jobs.producer import Producer
from jobs.reports import iter_results
from jobs.serialization import arq_job_payload, deserialize
from jobs.settings import Settings
from jobs.sources import read_jsonl
from tests import docfiles
from tests.helpers import Fleet, api_stats, run_cli, wait_batch

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(redis_url: str) -> Iterator[Fleet]:
    with Fleet(redis_url, workers=2, api_args=("--latency-ms", "150")) as f:
        yield f


def _folder(root: Path) -> Path:
    files = {
        "contracts/lease.pdf": docfiles.text_pdf(2, seed=1, title="Lease"),
        "contracts/nda.pdf": docfiles.text_pdf(1, seed=2, title="NDA"),
        "reports/figures.pdf": docfiles.image_pdf(),
        "web/q3.html": docfiles.SAMPLE_HTML,
        "web/about.htm": b"<html><body><h1>About</h1><p>We sell widgets.</p></body></html>",
        "word/agreement.docx": docfiles.sample_docx(),
        "notes/a.txt": b"Meeting notes: renew the lease in March.",
        "notes/b.md": b"# Plan\n\n- hire two engineers",
        "bad/locked.pdf": docfiles.encrypted_pdf(),
        "bad/fake.docx": b"not a zip at all",
        "logo.png": b"\x89PNG\r\n\x1a\n",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


GOOD = {
    "contracts/lease.pdf",
    "contracts/nda.pdf",
    "reports/figures.pdf",
    "web/q3.html",
    "web/about.htm",
    "word/agreement.docx",
    "notes/a.txt",
    "notes/b.md",
}
PDFS = {"contracts/lease.pdf", "contracts/nda.pdf", "reports/figures.pdf"}


async def _results(redis: Any, s: Settings, batch: str) -> dict[str, dict[str, Any]]:
    return {r["source"]: r async for r in iter_results(redis, s.keys, batch)}


def _calls(results: dict[str, dict[str, Any]], sources: set[str]) -> int:
    return sum(1 for src in sources for a in results[src]["attempts"] if a["status"] != "error")


async def test_folder_of_documents_native_then_text(
    fleet: Fleet, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path)
    monkeypatch.setenv("REDIS_URL", redis_url)
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        before = api_stats(fleet.api_url)["documents"]
        monkeypatch.setenv("ROUTEQ_PDF_MODE", "native")
        rc, _, err = await asyncio.to_thread(
            run_cli, "enqueue", str(folder), "--prompt", "Summarise.", "--batch", "dn", "--verbose"
        )
        assert rc == 1  # two files refused
        assert "bad/locked.pdf: encrypted PDF" in err and "bad/fake.docx: not a DOCX file" in err
        assert "logo.png: skipped" in err and "skipped 1 file(s) of other types" in err
        assert "enqueued 8, duplicates 0, rejected 2" in err
        await wait_batch(s, redis, "dn", timeout=90)
        native = await _results(redis, s, "dn")
        assert set(native) == GOOD and all(r["status"] == "done" for r in native.values())
        mid = api_stats(fleet.api_url)["documents"]
        # Every call of a PDF job carried its PDF as a document block; no other job carried one.
        assert mid["application/pdf"] - before["application/pdf"] == _calls(native, PDFS)
        lease = native["contracts/lease.pdf"]
        assert (
            lease["cache"]["pdf"][0]["mode"] == "native"
            and "native requested" in lease["cache"]["pdf"][0]["reason"]
        )
        # Billed as pages: 2 pages x 1,500 (image) + the text layer, well above the text alone.
        assert lease["usage"]["input_tokens"] + lease["usage"]["cache_write_5m_tokens"] > 3000

        monkeypatch.setenv("ROUTEQ_PDF_MODE", "text")
        _, _, err = await asyncio.to_thread(
            run_cli, "enqueue", str(folder), "--prompt", "Summarise.", "--batch", "dt"
        )
        assert (
            "skipped 1 file(s) of other types or hidden (--verbose lists them)" in err
            and "logo.png" not in err
        )
        await wait_batch(s, redis, "dt", timeout=90)
        text = await _results(redis, s, "dt")
        assert set(text) == GOOD and all(r["status"] == "done" for r in text.values())
        after = api_stats(fleet.api_url)["documents"]
        assert after["application/pdf"] == mid["application/pdf"]  # text mode: no document block at all
        t_lease = text["contracts/lease.pdf"]
        assert t_lease["cache"]["pdf"][0]["mode"] == "text"
        assert (
            t_lease["usage"]["input_tokens"] * 3
            < lease["usage"]["input_tokens"] + lease["usage"]["cache_write_5m_tokens"]
        )
    finally:
        await redis.aclose()


async def test_shared_pdf_written_once_read_by_the_rest(fleet: Fleet, redis_url: str, tmp_path: Path) -> None:
    n = 6
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "msa.pdf").write_bytes(docfiles.text_pdf(3, seed=7, title="MSA"))
    lines = [
        {
            "task": "qa",
            "prompt": f"Question {i}: what does clause {i} say?",
            "documents": [{"path": "contracts/msa.pdf", "mode": "native"}],
            "constraints": {"tier": "haiku"},
        }
        for i in range(n)
    ]
    f = tmp_path / "jobs.jsonl"
    f.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        res = await Producer(redis, s).enqueue(read_jsonl(f), batch="shared")
        assert res.enqueued == n and not res.rejected
        await wait_batch(s, redis, "shared", timeout=90)
        results = [r async for r in iter_results(redis, s.keys, "shared")]
        assert all(r["status"] == "done" and r["source"] == "contracts/msa.pdf" for r in results)
        writes = [
            r for r in results if r["usage"]["cache_write_5m_tokens"] + r["usage"]["cache_write_1h_tokens"]
        ]
        reads = [r for r in results if r["usage"]["cache_read_tokens"]]
        assert (len(writes), len(reads)) == (1, n - 1)
        # The breakpoint sits after the PDF: what is read is the PDF (3 pages x 1,500 + its text).
        assert all(r["usage"]["cache_read_tokens"] > 4500 for r in reads)
        # routeq's estimate (pages x PDF_TOKENS_PER_PAGE) against what the stand-in billed for the PDF.
        billed = reads[0]["usage"]["cache_read_tokens"]
        assert abs(3 * PDF_TOKENS_PER_PAGE - billed) / billed < 0.15, billed
        assert results[0]["cache"]["prefix_tokens"] == 3 * PDF_TOKENS_PER_PAGE
    finally:
        await redis.aclose()


async def _memory(redis: Any, keys: list[str]) -> int:
    total = 0
    for k in keys:
        total += int(await redis.memory_usage(k) or 0)
    return total


async def test_a_pdf_in_every_job_is_stored_once_per_batch(redis_url: str, tmp_path: Path) -> None:
    """50 jobs carrying one ~1 MiB PDF: Redis holds it once. Anchor in the same run: the same job
    payloads with the PDF's base64 inline in each, as they would be without the batch store."""
    n = 50
    pdf = docfiles.noise_pdf(1024)
    (tmp_path / "big.pdf").write_bytes(pdf)
    lines = [
        {"task": "qa", "prompt": f"q{i}", "documents": [{"path": "big.pdf", "mode": "native"}]}
        for i in range(n)
    ]
    f = tmp_path / "jobs.jsonl"
    f.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        res = await Producer(redis, s).enqueue(read_jsonl(f), batch="mem")
        assert res.enqueued == n
        docs = [k.decode() async for k in redis.scan_iter(match=s.keys.batch_document("mem", "*"))]
        assert docs == [s.keys.batch_document("mem", hashlib.sha256(pdf).hexdigest())]
        assert await redis.strlen(docs[0]) == len(pdf)
        job_keys = [ARQ_JOB_PREFIX + j for j in res.job_ids]
        by_ref = await _memory(redis, job_keys + docs)
        # The anchor: each job's payload with the bytes inline (base64, as a request carries them).
        inline_keys = []
        for j in res.job_ids:
            raw = await redis.get(ARQ_JOB_PREFIX + j)
            wire = deserialize_job(raw, deserializer=deserialize).args[0]
            wire["documents"][0]["data"] = base64.b64encode(pdf).decode()
            key = f"scratch:inline:{j}"
            await redis.set(key, arq_job_payload(JOB_FUNCTION, [wire], {}, 0))
            inline_keys.append(key)
        inline = await _memory(redis, inline_keys)
        per_job_ref, per_job_inline = by_ref / n, inline / n
        print(
            orjson.dumps(
                {
                    "jobs": n,
                    "pdf_bytes": len(pdf),
                    "bytes_per_job_inline": round(per_job_inline),
                    "bytes_per_job_by_ref": round(per_job_ref),
                    "ratio": round(per_job_inline / per_job_ref, 1),
                }
            ).decode()
        )
        assert per_job_inline / per_job_ref > 20
    finally:
        await redis.aclose()


async def test_producer_refuses_too_large_and_unstored_by_name(redis_url: str, tmp_path: Path) -> None:
    from jobs.contract import Document, Job, TaskType

    (tmp_path / "big.pdf").write_bytes(docfiles.text_pdf(100, chars_per_page=50))
    line = {
        "task": "qa",
        "prompt": "big",
        "documents": [{"path": "big.pdf", "mode": "native"}],
        "constraints": {"max_tier": "haiku"},
    }
    f = tmp_path / "jobs.jsonl"
    f.write_bytes(orjson.dumps(line))
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        res = await Producer(redis, s).enqueue(read_jsonl(f), batch="big")
        # 100 pages x 2,000 tokens + max_tokens is over Haiku's 200k window: refused by file name.
        assert res.enqueued == 0 and res.rejected[0].startswith("1 (big.pdf): documents too large")
        assert [k async for k in redis.scan_iter(match=s.keys.batch_document("big", "*"))] == []
        orphan = Document(name="o.pdf", ref="1" * 64, media_type="application/pdf", pages=1)
        res2 = await Producer(redis, s).enqueue([Job(task=TaskType.qa, prompt="x", documents=(orphan,))])
        assert res2.enqueued == 0 and "'o.pdf': its content is not stored" in res2.rejected[0]
    finally:
        await redis.aclose()


async def test_stand_in_rejects_a_malformed_pdf_with_the_api_400(fleet: Fleet) -> None:
    c = anthropic.AsyncAnthropic(base_url=fleet.api_url, api_key="k", max_retries=0)
    for data, needle in (("@@not base64@@", "base64"), (base64.b64encode(b"plain text").decode(), "PDF")):
        block = {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": data},
        }
        with pytest.raises(anthropic.BadRequestError) as e:
            await c.messages.create(
                model="claude-haiku-4-5",
                max_tokens=10,
                messages=[{"role": "user", "content": [block]}],  # type: ignore[list-item]
            )
        body = e.value.body
        assert isinstance(body, dict) and body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error" and needle in body["error"]["message"]
    await c.close()


async def test_content_gone_from_redis_fails_that_job_by_name_and_the_rest_go_on(
    redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "gone.pdf").write_bytes(docfiles.text_pdf(1, seed=3))
    (tmp_path / "kept.pdf").write_bytes(docfiles.text_pdf(1, seed=4))
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    try:
        from jobs.sources import read_folder

        res = await Producer(redis, s).enqueue(
            read_folder(tmp_path, task=TaskType.qa, prompt="Fee?", system=None, tags={}, pdf_mode="native"),
            batch="gone",
        )
        assert res.enqueued == 2
        gone = hashlib.sha256((tmp_path / "gone.pdf").read_bytes()).hexdigest()
        assert await redis.delete(s.keys.batch_document("gone", gone)) == 1
        with Fleet(redis_url, workers=1):
            await wait_batch(s, redis, "gone", timeout=60)
        results = {r["source"]: r async for r in iter_results(redis, s.keys, "gone")}
        assert results["kept.pdf"]["status"] == "done"
        assert (
            results["gone.pdf"]["status"] == "failed"
            and results["gone.pdf"]["error_type"] == "document_missing"
        )
        assert "document 'gone.pdf': its stored content is gone" in results["gone.pdf"]["error"]
    finally:
        await redis.aclose()
