"""Real Celery worker processes for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

QUEUES = "generic,security,analysis,alerts,generation"


def celery(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the celery CLI as a user would, with this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "corec_tasks", *args],
        capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
    )  # fmt: skip


@contextmanager
def running_workers(names: list[str], log_dir: Path, concurrency: int = 1) -> Iterator[list[str]]:
    """Start one worker process per name; stop them all (whole process groups) after."""
    procs = []
    try:
        for name in names:
            with open(log_dir / f"{name}.log", "wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "corec_tasks", "worker", "-Q", QUEUES,
                     "-c", str(concurrency), "-n", f"{name}@%h", "--without-mingle",
                     "--without-gossip", "--loglevel", "INFO"],
                    stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                    start_new_session=True,
                ))  # fmt: skip
        nodes = wait_for_nodes(len(names), log_dir)
        yield nodes
    finally:
        for proc in procs:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for_nodes(count: int, log_dir: Path, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        res = celery("inspect", "ping", "--timeout", "1", "--json", timeout=30)
        out = res.stdout
        nodes = [line for line in out.split('"') if "@" in line]
        if len(set(nodes)) >= count:
            return sorted(set(nodes))
        time.sleep(0.5)
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in log_dir.glob("*.log"))
    raise AssertionError(f"workers did not answer: {out}\n{logs}")
