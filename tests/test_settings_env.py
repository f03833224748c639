"""The suite's own guard: a developer's stray .env in the working directory does not reach the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.settings import Settings


def test_a_stray_env_file_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("ROUTEQ_KEY_PREFIX=from-dotenv\nROUTEQ_MAX_ATTEMPTS=99\n")
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert (s.key_prefix, s.max_attempts) == ("routeq", 6)
    # Outside the suite the same file is read, as documented.
    assert Settings(_env_file=tmp_path / ".env").key_prefix == "from-dotenv"  # type: ignore[call-arg]
