"""A real headless Chromium loads the UI: with the token it renders the batch, its live progress and the
per-tier spend (screenshot in out/ui.png); without it, a 401 page and no batch data."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from jobs.connections import connect
from jobs.reports import batch_report
from jobs.settings import Settings
from tests import browser
from tests.helpers import Fleet, wait_batch
from tests.web_fixtures import TOKEN, enqueue
from worker.sandbox.embedded import routeq_cmd

pytestmark = pytest.mark.integration

OUT = Path(__file__).resolve().parent.parent / "out"


@pytest.fixture(autouse=True)
def _needs_browser() -> None:
    why = browser.missing()
    if why:
        pytest.skip(f"no headless browser: {why}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ui_url(redis_url: str) -> Iterator[str]:
    """`routeq ui` as a user runs it, in its own process (the browser's calls block this one)."""
    port = _free_port()
    env = {"REDIS_URL": redis_url, "ROUTEQ_UI_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(routeq_cmd("ui", "--port", str(port)), env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx2.get(f"{url}/api/session", timeout=1)
            break
        except httpx2.HTTPError:
            assert proc.poll() is None, "routeq ui exited"
            assert time.monotonic() < deadline, "routeq ui never listened"
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


def _usd(v: float) -> str:
    return f"${v:.4f}"


async def test_page_shows_batch_progress_and_tier_spend(redis_url: str, ui_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    with Fleet(redis_url, workers=2, api_args=("--latency-ms", "250")), browser.Browser() as b:
        await enqueue(redis, s, "browser-batch", n=150, dead=1)
        b.get(f"{ui_url}/?token={TOKEN}#/batches")
        assert "token" not in b.driver.current_url, "the token stays out of the address bar"
        row = "document.querySelector('#batches tr[data-batch=\"browser-batch\"]')"
        b.wait_for(row)
        # live: the pending count falls while the page sits there (SSE, no reload)
        first = int(b.js(f"return {row}.querySelector('.n-pending').textContent.replace(/,/g, '')"))
        b.wait_for(f"+{row}.querySelector('.n-pending').textContent.replace(/,/g, '') < {first}", timeout=60)
        b.wait_for("document.querySelector('#live.on')")
        await wait_batch(s, redis, "browser-batch", timeout=120)
        rep = await batch_report(redis, s.keys, "browser-batch")
        b.wait_for(f"{row}.querySelector('.n-pending').textContent === '0'", timeout=10)
        assert b.text('#batches tr[data-batch="browser-batch"] .n-done') == str(rep["done"])
        assert b.text('#batches tr[data-batch="browser-batch"] .n-dead') == "1"
        assert b.text('#batches tr[data-batch="browser-batch"] .n-cost') == _usd(rep["cost_usd"])
        done_width = b.js(f"return {row}.querySelector('.bar .done').style.width")
        assert float(done_width.rstrip("%")) == pytest.approx(100 * rep["done"] / (rep["done"] + 1), abs=0.01)
        # overview: per-tier spend as the report has it
        b.get(f"{ui_url}/#/")
        b.wait_for("document.querySelector('#tier-haiku .cost')")
        b.wait_for("document.querySelector('#live.on')")
        for tier in ("haiku", "sonnet", "opus"):
            want = rep["tiers"].get(tier, {}).get("cost_usd", 0.0)
            assert b.text(f"#tier-{tier} .cost") == _usd(want), tier
        assert b.text("#ov-cost") == _usd(rep["cost_usd"])
        b.screenshot(OUT / "ui-overview.png")
        # batch detail: per-tier rows and the dead letter with its retry button
        b.get(f"{ui_url}/#/batch/browser-batch")
        b.wait_for("document.querySelector('#bd-dead button.retry')")
        for tier, trow in rep["tiers"].items():
            assert b.text(f"#bd-tier-{tier} .cost") == _usd(trow["cost_usd"])
        assert "bad_request" in b.text("#bd-dead")
        b.screenshot(OUT / "ui.png")
    await redis.aclose()
    assert (OUT / "ui.png").stat().st_size > 10_000


async def test_page_without_token_shows_no_data(redis_url: str, ui_url: str) -> None:
    s = Settings(redis_url=redis_url)
    redis = await connect(s)
    await enqueue(redis, s, "hidden-batch", n=3, dead=0)
    await redis.aclose()
    with browser.Browser() as b:
        for path in ("/", "/api/batches", "/?token=wrong"):
            b.get(ui_url + path)
            html = b.driver.page_source
            assert "unauthorized" in html
            assert "hidden-batch" not in html
        b.screenshot(OUT / "ui-401.png")
