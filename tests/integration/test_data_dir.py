"""Beat on a fresh machine: ``COREC_DATA_DIR`` names a folder that does not exist yet,
and ``celery -A corec_tasks beat`` (a real process, the shipped schedule file name)
makes it, owner-only, and runs (it once died at start with FileNotFoundError, issue 18)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from corec_tasks.procs import celery_cmd, managed
from corec_tasks.settings import Settings

pytestmark = pytest.mark.integration


def test_beat_makes_its_data_folder_and_starts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "fresh" / "node" / ".corec"
    monkeypatch.setenv("COREC_DATA_DIR", str(data))
    assert not (tmp_path / "fresh").exists()
    log = tmp_path / "logs" / "beat.log"
    old = os.umask(0o022)  # the usual umask, under which `mkdir -p` leaves 0755 folders
    try:
        with managed(celery_cmd("beat", "--loglevel", "INFO"), log) as beat:
            deadline = time.monotonic() + 60
            while "Sending due task" not in log.read_text(errors="replace"):
                assert beat.poll() is None, log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                time.sleep(0.2)
            assert beat.poll() is None  # running, not dead at start
            assert list(data.glob("celerybeat-schedule*")), sorted(data.iterdir())
    finally:
        os.umask(old)
    for folder in (tmp_path / "fresh", tmp_path / "fresh" / "node", data):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert "FileNotFoundError" not in log.read_text(errors="replace")
