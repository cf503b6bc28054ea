"""Worker nodes as Linux network namespaces, with links the test can cut.

The servers stay in the test's own namespace; each node is a namespace joined to it
by a veth pair (node ``k``: 10.N.k.2, the servers' side 10.N.k.1, N free here). Cutting a
node's link sets the servers' end down: packets vanish with no reset, as in a real
partition. PostgreSQL is reached through a small TCP relay bound to each link, so a
cut takes PostgreSQL away from the node too. Needs root (CI runs as root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"corec-probe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", name)
        _ip("netns", "del", name)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot create a network namespace: {exc}"
    return None


@dataclass
class Node:
    """One namespace: its name, its address, and the servers' address seen from it."""

    index: int
    netns: str
    host_if: str
    address: str
    server: str

    def cut(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def command(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *cmd]


def _free_net() -> int:
    """A second octet for 10.N.k.0/30 links that no interface here uses yet, so two
    runs at once (two checkouts on one machine) never share an address."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True,
                          timeout=20).stdout  # fmt: skip
    free = [n for n in range(100, 250) if f" 10.{n}." not in used]
    return random.choice(free)


@contextlib.contextmanager
def nodes(count: int) -> Iterator[list[Node]]:
    """``count`` node namespaces linked to this one; all removed afterwards."""
    tag = uuid.uuid4().hex[:5]
    net = _free_net()
    made: list[Node] = []
    try:
        for k in range(1, count + 1):
            ns, host_if = f"corec-{tag}-n{k}", f"cx{tag}{k}"
            _ip("netns", "add", ns)
            node = Node(k, ns, host_if, f"10.{net}.{k}.2", f"10.{net}.{k}.1")
            made.append(node)
            _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("addr", "add", f"{node.server}/30", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("-n", ns, "addr", "add", f"{node.address}/30", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield made
    finally:
        for node in made:
            with contextlib.suppress(subprocess.SubprocessError):
                _ip("link", "del", node.host_if)
            with contextlib.suppress(subprocess.SubprocessError):
                _ip("netns", "del", node.netns)


class TcpRelay:
    """Relays TCP connections from ``binds`` (address, port) to one PostgreSQL server
    (TCP or its Unix socket), on an asyncio loop in a thread of the test."""

    def __init__(self, database_url: str, binds: list[str], port: int) -> None:
        url = make_url(database_url)
        host = url.host or "/var/run/postgresql"
        self.target_port = url.port or 5432
        self.unix = f"{host}/.s.PGSQL.{self.target_port}" if host.startswith("/") else None
        self.target_host = host
        self.binds = binds
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.servers: list[asyncio.AbstractServer] = []

    def url_for(self, database_url: str, address: str) -> str:
        url = make_url(database_url).set(host=address, port=self.port, query={})
        return url.render_as_string(hide_password=False)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.unix:
                up_r, up_w = await asyncio.open_unix_connection(self.unix)
            else:
                up_r, up_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    def __enter__(self) -> TcpRelay:
        self.thread.start()
        for address in self.binds:
            fut = asyncio.run_coroutine_threadsafe(
                asyncio.start_server(self._serve, address, self.port), self.loop)
            self.servers.append(fut.result(10))
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            self.loop.call_soon_threadsafe(server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
