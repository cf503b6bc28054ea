"""Real Celery worker processes for integration tests."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg

from corec_tasks.db import libpq_url
from corec_tasks.procs import ALL_QUEUES, celery_cmd, managed, worker_cmd
from corec_tasks.redis_conn import redis_client
from corec_tasks.settings import Settings

QUEUES = ALL_QUEUES


def celery(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the celery CLI as a user would, with this process's environment."""
    return subprocess.run(celery_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))  # fmt: skip


@contextmanager
def running_workers(names: list[str], log_dir: Path, concurrency: int = 1) -> Iterator[list[str]]:
    """Start one worker process per name; stop them all (whole process groups) after."""
    with ExitStack() as stack:
        for name in names:
            stack.enter_context(managed(worker_cmd(name, concurrency), log_dir / f"{name}.log"))
        yield wait_for_nodes(len(names), log_dir)


@contextmanager
def worker_and_beat(log_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """One worker node (``w1``, 2 processes) and beat, both answering; yields beat's
    process and its log file. Stops both (whole process groups) after."""
    beat_log = log_dir / "beat.log"
    beat_cmd = celery_cmd("beat", "--schedule", str(log_dir / "beat"), "--loglevel", "INFO")
    with (
        managed(worker_cmd("w1", 2), log_dir / "w1.log"),
        managed(beat_cmd, beat_log) as beat,
    ):
        wait_for_nodes(1, log_dir)
        yield beat, beat_log


def wait_for_nodes(count: int, log_dir: Path, timeout: float = 60) -> list[str]:
    """Wait until ``count`` nodes answer ``celery inspect ping`` (the user's command)."""
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        res = celery("inspect", "ping", "--timeout", "1", "--json", timeout=30)
        out = res.stdout
        nodes = {part for part in out.split('"') if "@" in part}
        if len(nodes) >= count:
            return sorted(nodes)
        time.sleep(0.5)
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in log_dir.glob("*.log"))
    raise AssertionError(f"workers did not answer: {out}\n{logs}")


def cycle_rows(settings: Settings, cycle: int) -> tuple[int, int]:
    """Rows and distinct blocks of this test's ``cycle`` in ``bloques``.

    Rows are told apart from other tests' by the cycle's timestamp, which the
    dispatch fixed in Redis under this test's key prefix.
    """
    client = redis_client(settings)
    ts = client.get(settings.key(f"corec:cycle:ts:{cycle}"))
    client.close()
    if ts is None:
        return 0, 0
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT id) FROM bloques WHERE ciclo = %s "
            "AND timestamp = %s", (cycle, float(ts))).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0]), int(row[1])


class Beat:
    """What beat's ``persist-block-results`` entry does, every 5 s (its default): the
    test's loops call :meth:`tick`; a worker runs the task (landing results, and
    rescuing a cycle whose task message the broker lost, as a Redis restart or a
    worker killed just after its ``BRPOP`` can)."""

    def __init__(self, every: float = 5.0) -> None:
        self.every, self.last = every, 0.0

    def tick(self) -> None:
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            celery("call", "corec.blocks.persist")
