"""A beat scheduler that only acts while it holds a leader lock in Redis.

A second beat started by mistake (or a standby on another node) finds the lock
taken and sends nothing; if the leader dies, the lock expires after
``LOCK_TTL_S`` and a standby takes over. Jobs are idempotent besides, so the
rare overlap at a takeover doubles no effect.

Beat never dies of an outage. Losing Redis (a restart, a partition) makes it
stand by: it sends nothing, retries with a growing delay (``RETRY_S``, capped at
``RETRY_MAX_S``), logs once when the outage starts and once when it ends, and
leads again as soon as the lock can be taken. Its Redis client has socket
timeouts, so a partition (no reset, just silence) cannot hang a tick. A job whose
message cannot be sent meanwhile is logged by Celery's scheduler and sent at its
next due time.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import redis
from celery.beat import PersistentScheduler

from corec_tasks.folders import ensure_dir
from corec_tasks.redis_conn import redis_client
from corec_tasks.runtime import get_settings

log = logging.getLogger("corec_tasks.beat")

LOCK_TTL_S = 15.0
#: First retry delay after Redis fails; doubles per failed try up to RETRY_MAX_S.
RETRY_S = 0.5
RETRY_MAX_S = LOCK_TTL_S / 3
#: Socket timeouts of beat's own Redis client (a partition must not hang a tick).
SOCKET_TIMEOUT_S = 5.0

# Take the lock, or keep it if it is already ours (a Redis restored from its AOF
# still holds our token, and SET NX alone would make us wait out our own lock).
_HOLD = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaderScheduler(PersistentScheduler):  # type: ignore[misc]  # Celery: untyped
    """PersistentScheduler + a Redis leader lock (``corec:beat:leader``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = get_settings()
        self._redis = redis_client(
            settings,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            socket_keepalive=True,
        )
        self._lock_key = settings.key("corec:beat:leader")
        self._token = uuid.uuid4().hex
        self._leader = False
        self._outage: str | None = None  # what failed, while Redis is unreachable
        self._retry_s = RETRY_S
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        """Open the schedule file, making its folder first: beat may be the first
        process to run on a fresh machine (``COREC_DATA_DIR`` not made yet)."""
        ensure_dir(Path(self.schedule_filename).parent)
        super().setup_schedule()

    def _hold(self) -> bool:
        """Take or renew the lock; False (stand by) when it is another's or Redis is down."""
        ttl_ms = int(LOCK_TTL_S * 1000)
        try:
            held = bool(self._redis.eval(_HOLD, 1, self._lock_key, self._token, ttl_ms))
        except redis.RedisError as exc:
            if self._outage is None:
                self._outage = f"{type(exc).__name__}: {exc}"
                log.error("beat: Redis unavailable (%s); standing by, retrying", self._outage)
            if self._leader:
                log.warning("beat gave up the leader role during the outage")
            self._leader = False
            return False
        if self._outage is not None:
            log.warning("beat: Redis is back after the outage (%s)", self._outage)
            self._outage = None
        self._retry_s = RETRY_S
        if held and not self._leader:
            log.info("beat is the leader (lock %s)", self._lock_key)
        elif self._leader and not held:
            log.warning("beat lost the leader lock; standing by")
        self._leader = held
        return held

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._hold():
            if self._outage is not None:
                delay, self._retry_s = self._retry_s, min(2 * self._retry_s, RETRY_MAX_S)
                return delay
            # Standby: check again well before a dead leader's lock would expire.
            return LOCK_TTL_S / 5
        return min(float(super().tick(*args, **kwargs)), LOCK_TTL_S / 3)

    def close(self) -> None:
        try:
            if self._leader:
                self._redis.eval(_RELEASE, 1, self._lock_key, self._token)
        except redis.RedisError as exc:
            # The lock expires by itself; a failed release only delays a standby.
            log.warning("beat could not release the leader lock: %s", exc)
        finally:
            self._redis.close()
            super().close()
