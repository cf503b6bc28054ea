"""Bounds on logins: how many password hashes run at once, and how often one client
may try.

Each argon2 hash takes ``argon2_memory_cost`` KiB (64 MiB by default) for a quarter
second, so unbounded parallel logins exhaust memory: ``HashSlots`` lets
``max_concurrent_hashes`` run and makes the rest wait up to ``hash_wait_s``, then
refuses them (HTTP 503, retry). ``ClientLimiter`` counts attempts per client address
in Redis (``login_per_client`` per ``login_window_s``, HTTP 429 above it), and counts
an admin's failed logins per (client, admin), so a stranger locks only themselves out
of an admin account, never the admin.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import redis

from plugins.aaa.config import AAAConfig
from plugins.aaa.errors import AAAError


class TooManyAttemptsError(AAAError):
    """This client tried to log in too often; ``retry_after`` seconds to wait."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BusyError(AAAError):
    """The login service is at its bound (hash slots, or Redis unreachable): retry."""


class HashSlots:
    """At most ``max_concurrent_hashes`` password hashes at once in this process."""

    def __init__(self, config: AAAConfig) -> None:
        self._sem = threading.BoundedSemaphore(config.max_concurrent_hashes)
        self._wait = config.hash_wait_s

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot; BusyError after ``hash_wait_s`` without one."""
        if not self._sem.acquire(timeout=self._wait):
            raise BusyError(
                f"too many logins at once (more than {self._wait:g} s waiting); retry shortly"
            )
        try:
            yield
        finally:
            self._sem.release()


class ClientLimiter:
    """Per-client login counters in Redis (fixed windows; keys expire by themselves)."""

    def __init__(self, client: redis.Redis, prefix: str, config: AAAConfig) -> None:
        self._redis = client
        self._prefix = f"{prefix}aaa:login:"
        self._limit = config.login_per_client
        self._window = config.login_window_s
        self._max_failures = config.max_login_attempts
        self._hold = config.lockout_s or 86_400

    def hit(self, client: str) -> None:
        """Count one attempt by ``client``; TooManyAttemptsError above the limit."""
        key = f"{self._prefix}client:{client}"
        count, ttl = self._bump(key, self._window)
        if count > self._limit:
            raise TooManyAttemptsError(
                f"too many login attempts from {client}: at most {self._limit} per "
                f"{self._window} s; retry in {ttl} s",
                retry_after=ttl,
            )

    def pair_locked(self, client: str, username: str) -> bool:
        """True when ``client`` failed ``max_login_attempts`` times on ``username``."""
        try:
            raw = self._redis.get(self._pair(client, username))
        except redis.RedisError as exc:
            raise BusyError(f"login limits are unavailable (Redis: {exc}); retry") from None
        return raw is not None and int(raw) >= self._max_failures

    def pair_failed(self, client: str, username: str) -> int:
        """Count one failure of ``client`` on ``username``; the count in this hold."""
        return self._bump(self._pair(client, username), self._hold)[0]

    def pair_clear(self, client: str, username: str) -> None:
        with suppress(redis.RedisError):  # the count expires by itself
            self._redis.delete(self._pair(client, username))

    def _pair(self, client: str, username: str) -> str:
        return f"{self._prefix}pair:{client}:{username}"

    def _bump(self, key: str, ttl_s: int) -> tuple[int, int]:
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(key, 0, ex=ttl_s, nx=True)
            pipe.incr(key)
            pipe.ttl(key)
            _, count, ttl = pipe.execute()
        except redis.RedisError as exc:
            # Closed, not open: without the counters a stranger could guess freely.
            raise BusyError(f"login limits are unavailable (Redis: {exc}); retry") from None
        return int(count), max(int(ttl), 1)
