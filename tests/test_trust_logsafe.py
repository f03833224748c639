"""The log filter keeps arq's lines about jobs but drops the job text they would quote (unit)."""

from __future__ import annotations

import logging

import pytest

from worker.observe import logsafe

SECRET = "SSN 123-45-6789"


def test_arq_lines_lose_job_text(caplog: pytest.LogCaptureFixture) -> None:
    logsafe.install()
    logsafe.install()  # idempotent
    arq = logging.getLogger(logsafe.ARQ_LOGGER)
    assert sum(isinstance(f, logsafe.JobTextFilter) for f in arq.filters) == 1
    with caplog.at_level(logging.INFO, logger=logsafe.ARQ_LOGGER):
        arq.info("%6.2fs → %s(%s)%s", 0.1, "j1:process_job", repr({"prompt": SECRET}), " try=2")
        try:
            raise ValueError(f"input_value={SECRET!r}")
        except ValueError as e:
            arq.exception("%6.2fs ! %s failed, %s: %s", 0.2, "j1:process_job", "ValueError", e)
    text = caplog.text
    assert SECRET not in text
    assert "j1:process_job(…) try=2" in text
    assert (
        "j1:process_job failed, ValueError: message not logged [ValueError at test_trust_logsafe.py:" in text
    )


def test_exception_summary_names_type_and_place_only() -> None:
    try:
        {"a": 1}[SECRET]
    except KeyError as e:
        summary = logsafe.exception_summary(e)
    assert SECRET not in summary and summary.startswith("KeyError at test_trust_logsafe.py:")
