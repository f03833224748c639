"""Documents in: the readers per format, the PDF-mode decision, bad files rejected by name, the
contract's document forms, the request layout of a native PDF, and the stand-in's document blocks."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import fakeredis.aioredis
import orjson
import pytest

from jobs.contract import Document, Job, TaskType
from jobs.documents import loader
from jobs.documents.docx import docx_to_text
from jobs.documents.html import html_to_text
from jobs.documents.limits import MAX_PDF_BYTES, PDF_TOKENS_PER_PAGE, DocumentError
from jobs.documents.mode import PdfFacts, choose_pdf_mode
from jobs.documents.pdf import read_pdf
from jobs.documents.store import ContentCache, MissingDocument, load_documents, store_documents
from jobs.producer import Located, TooLarge, check_fits
from jobs.settings import Settings
from jobs.sources import Rejected, read_folder, read_jsonl
from tests import docfiles
from worker.policy import cache_layout
from worker.sandbox.mock_api.errors import ApiError
from worker.sandbox.mock_api.request import parse_messages_request

# --- readers --------------------------------------------------------------------------------------


def test_pdf_reader_counts_pages_and_finds_the_text_layer() -> None:
    got = read_pdf(docfiles.text_pdf(3, title="Lease"))
    assert (got.pages, got.text_pages, got.image_pages) == (3, 3, 0)
    assert "Lease page 2." in got.text and "[page 3]" in got.text
    assert read_pdf(docfiles.image_pdf()).image_pages == 1


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (docfiles.encrypted_pdf(), "encrypted PDF"),
        (docfiles.truncated_pdf(), "damaged PDF: truncated"),
        (docfiles.empty_pdf(), "empty PDF (no pages)"),
        (b"", "empty file"),
        (b"just some text, not a PDF %%EOF", "not a PDF"),
        (b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >> garbage\n%%EOF\n", "PDF"),
        (b"%PDF-1.4\n" + b"\0" * (MAX_PDF_BYTES + 1) + b"\n%%EOF", "over the API's 32.0 MB limit"),
    ],
)
def test_pdfs_the_api_would_refuse_are_refused_with_the_reason(data: bytes, needle: str) -> None:
    with pytest.raises(DocumentError, match=None) as e:
        read_pdf(data)
    assert needle in str(e.value)


def test_pdf_over_the_page_limit_is_refused() -> None:
    with pytest.raises(DocumentError, match="101 pages, over the API's 100-page limit"):
        read_pdf(docfiles.text_pdf(101, chars_per_page=50))


def test_html_becomes_text_keeping_headings_lists_and_tables() -> None:
    text = html_to_text(docfiles.SAMPLE_HTML)
    assert text.startswith("# Quarterly Report")
    assert "## By region" in text
    assert "| Region | Revenue |" in text and "| EMEA | 4.2M |" in text
    assert "- Costs fell" in text and "**12%**" in text
    assert "do-not-include" not in text and "color: red" not in text and "Q3</title>" not in text
    with pytest.raises(DocumentError, match="no visible text"):
        html_to_text(b"<html><head><script>x()</script></head><body> </body></html>")


def test_docx_becomes_text_keeping_headings_tables_and_order() -> None:
    text = docx_to_text(docfiles.sample_docx())
    assert text.splitlines()[0] == "# Service Agreement"
    assert text.index("## Fees") < text.index("| Item | Fee |") < text.index("- Either party")
    assert "| Support | 20 USD/month |" in text


def test_docx_that_is_not_a_zip_or_not_a_document_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="not a DOCX file \\(not a zip archive\\)"):
        docx_to_text(b"PK? no, plain text")
    z = tmp_path / "x.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("hello.txt", "not word")
    with pytest.raises(DocumentError, match="damaged DOCX"):
        docx_to_text(z.read_bytes())


# --- the PDF mode ---------------------------------------------------------------------------------

TEXT_ONLY = PdfFacts(pages=4, text_pages=4, image_pages=0, text_chars=8000)


@pytest.mark.parametrize(
    ("requested", "facts", "task", "mode", "needle"),
    [
        ("auto", TEXT_ONLY, TaskType.summarize, "text", "text layer on all 4 pages, no images"),
        ("auto", TEXT_ONLY, TaskType.extract, "native", "task extract needs the layout"),
        ("auto", PdfFacts(4, 4, 1, 8000), TaskType.qa, "native", "1/4 pages have images"),
        ("auto", PdfFacts(4, 1, 0, 500), TaskType.qa, "native", "text layer on only 1/4 pages"),
        ("native", TEXT_ONLY, TaskType.qa, "native", "native requested"),
        ("text", PdfFacts(4, 4, 2, 8000), TaskType.extract, "text", "text requested"),
    ],
)
def test_pdf_mode_choice_and_reason(
    requested: str, facts: PdfFacts, task: TaskType, mode: str, needle: str
) -> None:
    got = choose_pdf_mode(requested, facts, task)  # type: ignore[arg-type]
    assert got.mode == mode and needle in got.reason
    assert "~2000 tokens as text vs ~8000 native" in choose_pdf_mode("auto", TEXT_ONLY, None).reason


def test_text_mode_on_a_pdf_without_a_text_layer_is_refused() -> None:
    with pytest.raises(DocumentError, match="no text layer"):
        choose_pdf_mode("text", PdfFacts(2, 0, 2, 0), TaskType.qa)


def test_loader_sends_a_pdf_natively_or_as_text() -> None:
    data = docfiles.text_pdf(2)
    native = loader.load_bytes(data, ".pdf", name="a.pdf", source="a.pdf", mode="native")
    assert native.media_type == "application/pdf" and native.pages == 2 and native.mode == "native"
    assert native.ref == hashlib.sha256(data).hexdigest() and native.payload == data
    assert native.tokens == 2 * PDF_TOKENS_PER_PAGE
    text = loader.load_bytes(data, ".pdf", name="a.pdf", task=TaskType.summarize)
    assert text.media_type == "text/plain" and text.mode == "text" and text.pages == 2
    assert text.payload is not None and b"Contract page 1." in text.payload
    assert text.tokens is not None and text.tokens < native.tokens / 3
    with pytest.raises(DocumentError, match=r"unsupported file type '\.png'"):
        loader.load_bytes(b"\x89PNG", ".png", name="x.png")


# --- the contract -----------------------------------------------------------------------------------


def test_text_documents_keep_their_wire_form_and_job_ids() -> None:
    body = {"task": "qa", "prompt": "p", "documents": [{"name": "a.txt", "text": "hello"}]}
    job = Job.model_validate(body)
    assert job.to_wire()["documents"] == [{"name": "a.txt", "text": "hello"}]
    # The id is the hash of the job's full document (unset constraints included, though the wire form
    # leaves them out); this is the id the same job had before documents and new constraints existed.
    assert job.job_id == "j1cb2b44688e7529a2ac761732276312"
    dump = {
        k: v
        for k, v in job.model_dump(mode="json", by_alias=True).items()
        if k not in ("id", "internal_id", "source")
    }
    # when it is due is not what it is: mode and deadline stay out of the id
    dump["constraints"] = {k: v for k, v in dump["constraints"].items() if k not in ("mode", "deadline")}
    dump.pop("trace_context", None)
    assert dump["documents"] == [{"name": "a.txt", "text": "hello"}]
    assert (
        job.job_id == "j" + hashlib.sha256(orjson.dumps(dump, option=orjson.OPT_SORT_KEYS)).hexdigest()[:31]
    )
    assert Job.from_wire(job.to_wire()) == job


def test_pdf_documents_round_trip_without_their_bytes() -> None:
    doc = loader.load_bytes(docfiles.text_pdf(1), ".pdf", name="c.pdf", source="in/c.pdf", mode="native")
    job = Job(task=TaskType.qa, prompt="p", documents=(doc,))
    wire = orjson.loads(orjson.dumps(job.to_wire()))
    assert set(wire["documents"][0]) == {
        "name",
        "ref",
        "media_type",
        "pages",
        "tokens",
        "mode",
        "mode_reason",
        "source",
    }
    back = Job.from_wire(wire)
    assert (
        back.documents[0].payload is None
        and back.documents[0].ref == doc.ref
        and back.document_source == "in/c.pdf"
    )
    with pytest.raises(ValueError, match="either text or a ref"):
        Document(name="x", text="t", ref="0" * 64)
    with pytest.raises(ValueError, match="needs its ref and pages"):
        Document(name="x", text="t", media_type="application/pdf")
    with pytest.raises(ValueError, match="mode applies to PDFs read from a file"):
        Document(name="x", text="t", mode="native")


# --- folders and JSONL ------------------------------------------------------------------------------


def _folder(tmp_path: Path) -> Path:
    files = {
        "contracts/a.pdf": docfiles.text_pdf(2, seed=1),
        "contracts/scan.pdf": docfiles.image_pdf(),
        "pages/report.html": docfiles.SAMPLE_HTML,
        "word/agreement.docx": docfiles.sample_docx(),
        "notes.txt": b"plain notes",
        "bad/locked.pdf": docfiles.encrypted_pdf(),
        "bad/cut.pdf": docfiles.truncated_pdf(),
        "bad/blank.pdf": docfiles.empty_pdf(),
        "bad/huge.pdf": docfiles.text_pdf(101, chars_per_page=50),
        "bad/fake.docx": b"this is not a zip",
        "logo.png": b"\x89PNG\r\n",
        "data.csv": b"a,b\n1,2\n",
    }
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    return tmp_path


def test_folder_one_job_per_document_bad_ones_by_name_others_listed(tmp_path: Path) -> None:
    skipped: list[str] = []
    items = list(
        read_folder(
            _folder(tmp_path),
            task=TaskType.summarize,
            prompt="Summarise",
            system=None,
            tags={},
            skipped=skipped,
        )
    )
    jobs = {i.job.source: i.job for i in items if isinstance(i, Located)}
    bad = {r.where: r.reason for r in items if isinstance(r, Rejected)}
    assert set(jobs) == {
        "contracts/a.pdf",
        "contracts/scan.pdf",
        "pages/report.html",
        "word/agreement.docx",
        "notes.txt",
    }
    assert sorted(skipped) == ["data.csv", "logo.png"]
    assert set(bad) == {"bad/locked.pdf", "bad/cut.pdf", "bad/blank.pdf", "bad/huge.pdf", "bad/fake.docx"}
    assert "encrypted" in bad["bad/locked.pdf"] and "truncated" in bad["bad/cut.pdf"]
    assert "no pages" in bad["bad/blank.pdf"] and "100-page limit" in bad["bad/huge.pdf"]
    assert "not a zip" in bad["bad/fake.docx"]
    # auto: a text-only PDF goes as text for a summary, one with a figure natively.
    assert jobs["contracts/a.pdf"].documents[0].mode == "text"
    assert jobs["contracts/scan.pdf"].documents[0].media_type == "application/pdf"
    html_doc = jobs["pages/report.html"].documents[0]
    assert html_doc.payload is not None and b"| EMEA | 4.2M |" in html_doc.payload


def test_jsonl_path_references_are_read_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "a.pdf").write_bytes(docfiles.text_pdf(2))
    (tmp_path / "contracts" / "locked.pdf").write_bytes(docfiles.encrypted_pdf())
    lines = [
        {"task": "qa", "prompt": "q1", "documents": [{"path": "contracts/a.pdf"}]},
        {"task": "qa", "prompt": "q2", "documents": [{"path": "contracts/a.pdf", "mode": "native"}]},
        {
            "task": "qa",
            "prompt": "q3",
            "documents": [{"path": "contracts/a.pdf", "name": "A", "mode": "native"}],
        },
        {"task": "qa", "prompt": "q4", "documents": [{"path": "contracts/locked.pdf"}]},
        {"task": "qa", "prompt": "q5", "documents": [{"path": "contracts/missing.pdf"}]},
        {"task": "qa", "prompt": "q6", "documents": [{"path": "contracts/a.pdf", "mode": "fast"}]},
        {"task": "qa", "prompt": "q7", "documents": [{"name": "inline", "text": "still fine"}]},
    ]
    f = tmp_path / "jobs.jsonl"
    f.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    items = list(read_jsonl(f, pdf_mode="auto"))
    jobs = [i.job for i in items if isinstance(i, Located)]
    bad = {r.where: r.reason for r in items if isinstance(r, Rejected)}
    assert [j.prompt for j in jobs] == ["q1", "q2", "q3", "q7"]
    assert jobs[0].documents[0].mode == "text" and jobs[1].documents[0].mode == "native"
    assert (
        jobs[1].documents[0].ref
        == jobs[2].documents[0].ref
        == hashlib.sha256((tmp_path / "contracts" / "a.pdf").read_bytes()).hexdigest()
    )
    assert jobs[2].documents[0].name == "A" and jobs[2].document_source == "contracts/a.pdf"
    assert bad["4"].startswith("contracts/locked.pdf: encrypted PDF")
    assert bad["5"].startswith("contracts/missing.pdf: cannot read")
    assert "documents.0.mode" in bad["6"]


# --- the request a worker sends ---------------------------------------------------------------------


def _spec() -> object:
    return Settings(redis_url="redis://unused").catalog.spec("claude-sonnet-4-5")


def test_native_pdf_is_a_document_block_with_a_breakpoint_when_shared() -> None:
    data = docfiles.text_pdf(2)
    doc = loader.load_bytes(data, ".pdf", name="c.pdf", mode="native")
    job = Job(task=TaskType.qa, prompt="What is the fee?", documents=(doc,))
    contents = {doc.ref or "": base64.b64encode(data).decode()}
    plan = cache_layout.build_request(
        job, "claude-sonnet-4-5", _spec(), ttl="5m", caching=True, contents=contents
    )  # type: ignore[arg-type]
    block, prompt = plan.params["messages"][0]["content"]
    assert block["type"] == "document" and block["title"] == "c.pdf"
    assert block["source"] == {
        "type": "base64",
        "media_type": "application/pdf",
        "data": contents[doc.ref or ""],
    }
    assert block["cache_control"] == {"type": "ephemeral"} and "cache_control" not in prompt
    assert plan.cached_prefix_tokens == 2 * PDF_TOKENS_PER_PAGE
    alone = cache_layout.build_request(
        job,
        "claude-sonnet-4-5",
        _spec(),
        ttl="5m",
        caching=True,
        contents=contents,  # type: ignore[arg-type]
        unshared=frozenset({doc.content_key}),
    )
    assert "cache_control" not in alone.params["messages"][0]["content"][0]
    with pytest.raises(cache_layout.MissingContent):
        cache_layout.build_request(job, "claude-sonnet-4-5", _spec(), ttl=None, caching=True)  # type: ignore[arg-type]


def test_text_read_from_a_file_is_laid_out_like_inline_text() -> None:
    doc = loader.load_bytes(b"hello world " * 50, ".txt", name="n.txt")
    inline = Job(task=TaskType.qa, prompt="p", documents=(Document(name="n.txt", text="hello world " * 50),))
    stored = Job(task=TaskType.qa, prompt="p", documents=(doc,))
    a = cache_layout.build_request(inline, "m", _spec(), ttl=None, caching=True)  # type: ignore[arg-type]
    b = cache_layout.build_request(
        stored, "m", _spec(), ttl=None, caching=True, contents={doc.ref or "": "hello world " * 50}
    )  # type: ignore[arg-type]
    assert a.params == b.params and a.estimated_input_tokens == b.estimated_input_tokens


# --- the stand-in ----------------------------------------------------------------------------------


def _pdf_request(data: str, media: str = "application/pdf") -> dict[str, object]:
    block = {"type": "document", "source": {"type": "base64", "media_type": media, "data": data}}
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [block, {"type": "text", "text": "q"}]}],
    }


def test_routeq_page_estimate_against_the_stand_in_count() -> None:
    """Pages x PDF_TOKENS_PER_PAGE is within 20% of what the stand-in bills for a page of ~1,800
    characters (an image's worth plus the text layer)."""
    for pages in (1, 5, 20):
        data = docfiles.text_pdf(pages, seed=pages)
        counted = parse_messages_request(_pdf_request(base64.b64encode(data).decode())).input_tokens - 1
        estimate = loader.load_bytes(data, ".pdf", name="x.pdf", mode="native").estimated_tokens
        assert 0.8 <= estimate / counted <= 1.2, (pages, estimate, counted)


def test_stand_in_counts_documents_and_rejects_bad_ones() -> None:
    req = parse_messages_request(_pdf_request(base64.b64encode(docfiles.text_pdf(2)).decode()))
    assert req.documents == {"application/pdf": 1}
    for body, needle in (
        (_pdf_request("%%% not base64 %%%"), "base64 data is not valid"),
        (_pdf_request(base64.b64encode(b"hello, not a pdf").decode()), "The PDF specified was not valid"),
        (_pdf_request(base64.b64encode(b"x").decode(), "image/png"), "application/pdf"),
    ):
        with pytest.raises(ApiError) as e:
            parse_messages_request(body)
        assert (
            e.value.status == 400
            and e.value.error_type == "invalid_request_error"
            and needle in e.value.message
        )


def test_stand_in_takes_plain_text_document_sources() -> None:
    block = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x" * 400}}
    body = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": [block]}]}
    req = parse_messages_request(body)
    assert req.documents == {"text/plain": 1} and req.input_tokens == 100


# --- the worker's read of stored content --------------------------------------------------------------


async def test_stored_content_is_read_once_per_process_and_missing_content_is_named() -> None:
    redis = fakeredis.aioredis.FakeRedis()
    keys = Settings(redis_url="redis://unused").keys
    data = docfiles.text_pdf(1)
    doc = loader.load_bytes(data, ".pdf", name="c.pdf", mode="native")
    note = loader.load_bytes(b"plain words", ".txt", name="n.txt")
    await store_documents(redis, keys, "b", [doc, note], 60_000, set())
    held = ContentCache(max_chars=10_000_000)
    got = await load_documents(redis, keys, "b", [doc, note], held)
    assert got == {doc.ref: base64.b64encode(data).decode(), note.ref: "plain words"}
    await redis.delete(keys.batch_document("b", doc.ref or ""), keys.batch_document("b", note.ref or ""))
    assert await load_documents(redis, keys, "b", [doc, note], held) == got  # from this process's cache
    with pytest.raises(MissingDocument) as e:
        await load_documents(redis, keys, "b", [doc])
    assert e.value.name == "c.pdf"


def test_content_cache_is_bounded() -> None:
    held = ContentCache(max_chars=10)
    held.put(("b", "1", "text/plain"), "aaaa")
    held.put(("b", "2", "text/plain"), "bbbb")
    assert held.get(("b", "1", "text/plain")) == "aaaa"  # now the most recent
    held.put(("b", "3", "text/plain"), "cccc")
    assert held.get(("b", "2", "text/plain")) is None and held.get(("b", "1", "text/plain")) == "aaaa"
    held.put(("b", "4", "text/plain"), "x" * 11)
    assert held.get(("b", "4", "text/plain")) is None


def test_native_pdfs_over_the_per_request_page_limit_together_are_refused() -> None:
    s = Settings(redis_url="redis://unused")
    docs = tuple(
        loader.load_bytes(
            docfiles.text_pdf(60, seed=i, chars_per_page=40), ".pdf", name=f"{i}.pdf", mode="native"
        )
        for i in range(2)
    )
    with pytest.raises(TooLarge, match="120 pages together, over the API's 100 per request"):
        check_fits(Job(task=TaskType.qa, prompt="p", documents=docs), s)
    check_fits(Job(task=TaskType.qa, prompt="p", documents=docs[:1]), s)
