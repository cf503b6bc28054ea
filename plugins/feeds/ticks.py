"""How a feed tick touches Redis: one at a time, once per tick key, all or nothing.

A tick runs under a per-feed Redis lock (workers on every node share it), skips if
its key is already marked done, and then writes everything in one MULTI: the stream
entries, the feed's new state (last closes, history, CSV cursors, step counter) and
the done mark. A worker that dies mid-tick leaves nothing half-written; a redelivered
or doubled tick (two beats) finds the mark and publishes nothing.

Keys, under the deployment prefix: ``feeds:lock:<feed>``, ``feeds:done:<feed>:<key>``
(expires after ``DONE_TTL_S``), and the state keys each feed names with ``key()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import redis
from redis.exceptions import LockError

from corec_tasks.errors import PluginError
from corec_tasks.settings import Settings
from corec_tasks.streams.bus import StreamBus

#: How long a tick may hold its feed's lock (and how long another waits for it).
LOCK_S = 60
#: How long a tick key is remembered as done.
DONE_TTL_S = 7 * 86400


class Ticker:
    """Redis access shared by the three feeds (one StreamBus, one client)."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.bus = StreamBus(settings, client)
        self.r: redis.Redis = self.bus.client

    def close(self) -> None:
        """Close the Redis client if this ticker created it."""
        self.bus.close()

    def key(self, *parts: str) -> str:
        """``feeds:<parts...>`` under the deployment prefix."""
        return self.settings.key(":".join(("feeds", *parts)))

    @contextmanager
    def exclusive(self, feed: str) -> Iterator[None]:
        """Hold ``feed``'s lock for the block; PluginError if it stays taken."""
        lock = self.r.lock(self.key("lock", feed), timeout=LOCK_S, blocking_timeout=LOCK_S)
        if not lock.acquire():
            raise PluginError("feeds", f"{feed}: lock still held after {LOCK_S}s")
        try:
            yield
        finally:
            # Expired under a very slow tick: nothing left to release.
            with suppress(LockError):
                lock.release()

    def done(self, feed: str, tick: str) -> bool:
        """Whether tick ``tick`` of ``feed`` already ran."""
        return bool(self.r.exists(self.key("done", feed, tick)))

    def commit(
        self,
        feed: str,
        tick: str,
        stream: str,
        payloads: Sequence[Mapping[str, Any]],
        queue: Callable[[Any], None] | None = None,
    ) -> list[str]:
        """XADD ``payloads`` to ``stream``, queue the state writes (``queue(pipe)``) and
        mark the tick done, in one MULTI; return the entry ids."""
        pipe = self.r.pipeline(transaction=True)
        key = self.bus.key(stream)
        for payload in payloads:
            fields: dict[Any, Any] = self.bus.encode(stream, payload)
            pipe.xadd(key, fields)  # no blind MAXLEN: trimmed below what no group needs
        if queue is not None:
            queue(pipe)
        pipe.set(self.key("done", feed, tick), b"1", ex=DONE_TTL_S)
        replies = pipe.execute()
        self.bus.trim_throttled(stream)
        return [_str(i) for i in replies[: len(payloads)]]


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
