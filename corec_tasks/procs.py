"""Child processes for the demo, tests and benchmarks: Celery workers and beat,
each in its own process group, stopped for sure (no prefork child outlives it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from corec_tasks.config import CELERY_DEFAULT_QUEUE, CHANNEL_QUEUES
from corec_tasks.folders import ensure_dir

#: Every queue a worker serves by default: the channels' and Celery's default queue.
ALL_QUEUES = ",".join((*CHANNEL_QUEUES.values(), CELERY_DEFAULT_QUEUE))


def celery_cmd(*args: str) -> list[str]:
    """``celery -A corec_tasks ARGS`` with this interpreter."""
    return [sys.executable, "-m", "celery", "-A", "corec_tasks", *args]


def worker_cmd(
    name: str, concurrency: int = 2, queues: str = ALL_QUEUES, *extra: str
) -> list[str]:
    return celery_cmd("worker", "-Q", queues, "-c", str(concurrency), "-n", f"{name}@%h",
                      "--without-mingle", "--without-gossip", "--loglevel", "INFO",
                      *extra)  # fmt: skip


def start(
    cmd: list[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a new process group, output appended to ``log``."""
    ensure_dir(log.parent)
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(env if env is not None else os.environ),
                                start_new_session=True)  # fmt: skip


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the process group (a warm shutdown), SIGKILL whatever is left."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextmanager
def managed(
    cmd: list[str], log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` for the duration of the block."""
    proc = start(cmd, log, env)
    try:
        yield proc
    finally:
        stop(proc)


def wait_for_workers(count: int = 1, timeout: float = 60) -> list[str]:
    """Node names of at least ``count`` live workers; raises TimeoutError otherwise."""
    # Here, not at the top: the CLI imports procs to start servers and workers, and the
    # Celery app (with every plugin's task modules in its config) is needed only to wait.
    from corec_tasks.celery import app

    deadline = time.monotonic() + timeout
    nodes: set[str] = set()
    while time.monotonic() < deadline:
        for reply in app.control.ping(timeout=1.0) or []:
            nodes.update(reply)
        if len(nodes) >= count:
            return sorted(nodes)
    raise TimeoutError(f"{len(nodes)} of {count} Celery workers answered within {timeout:.0f}s")
