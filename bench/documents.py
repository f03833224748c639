"""Redis bytes per job when every job of a batch carries the same PDF: stored once by reference
(routeq) against the anchor of the same job payloads with the PDF's base64 inline in each.

    python bench/documents.py [--jobs 50] [--kib 1024]

Prints one JSON object: bytes per job both ways (``MEMORY USAGE`` of the arq job documents, plus the
one stored copy shared out over the jobs) and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from _common import Procs, emit, settings_for
from arq.jobs import deserialize_job

from jobs.connections import connect
from jobs.keys import ARQ_JOB_PREFIX, JOB_FUNCTION
from jobs.producer import Producer
from jobs.serialization import arq_job_payload, deserialize
from jobs.sources import read_jsonl
from tests.docfiles import noise_pdf


async def _memory(redis: Any, keys: list[str]) -> int:
    total = 0
    for k in keys:
        total += int(await redis.memory_usage(k) or 0)
    return total


async def main(args: argparse.Namespace) -> dict[str, Any]:
    pdf = noise_pdf(args.kib)
    with Procs() as procs, tempfile.TemporaryDirectory() as tmp:
        redis_proc = procs.redis()
        s = settings_for(redis_proc.url)
        (Path(tmp) / "shared.pdf").write_bytes(pdf)
        lines = [
            {"task": "qa", "prompt": f"q{i}", "documents": [{"path": "shared.pdf", "mode": "native"}]}
            for i in range(args.jobs)
        ]
        jsonl = Path(tmp) / "jobs.jsonl"
        jsonl.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
        redis = await connect(s)
        try:
            res = await Producer(redis, s).enqueue(read_jsonl(jsonl), batch="bench-docs")
            job_keys = [ARQ_JOB_PREFIX + j for j in res.job_ids]
            doc_keys = [
                k.decode() async for k in redis.scan_iter(match=s.keys.batch_document("bench-docs", "*"))
            ]
            by_ref = await _memory(redis, job_keys + doc_keys)
            inline_keys = []
            for j in res.job_ids:
                wire = deserialize_job(await redis.get(ARQ_JOB_PREFIX + j), deserializer=deserialize).args[0]
                wire["documents"][0]["data"] = base64.b64encode(pdf).decode()
                inline_keys.append(f"bench:inline:{j}")
                await redis.set(inline_keys[-1], arq_job_payload(JOB_FUNCTION, [wire], {}, 0))
            inline = await _memory(redis, inline_keys)
        finally:
            await redis.aclose()
    n = len(res.job_ids)
    return {
        "bench": "documents",
        "jobs": n,
        "pdf_bytes": len(pdf),
        "stored_copies": len(doc_keys),
        "bytes_per_job_by_ref": round(by_ref / n),
        "bytes_per_job_inline": round(inline / n),
        "ratio": round(inline / by_ref, 1),
    }


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=50)
    p.add_argument("--kib", type=int, default=1024)
    return p.parse_args()


if __name__ == "__main__":
    print(emit(asyncio.run(main(parse()))))
