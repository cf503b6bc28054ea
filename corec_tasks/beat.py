"""A beat scheduler that only acts while it holds a leader lock in Redis.

A second beat started by mistake (or a standby on another node) finds the lock
taken and sends nothing; if the leader dies, the lock expires after
``LOCK_TTL_S`` and a standby takes over. Jobs are idempotent besides, so the
rare overlap at a takeover doubles no effect.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery.beat import PersistentScheduler

from corec_tasks.redis_conn import redis_client
from corec_tasks.settings import get_settings

log = logging.getLogger("corec_tasks.beat")

LOCK_TTL_S = 15.0
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaderScheduler(PersistentScheduler):
    """PersistentScheduler + a Redis leader lock (``corec:beat:leader``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = get_settings()
        self._redis = redis_client(settings)
        self._lock_key = settings.key("corec:beat:leader")
        self._token = uuid.uuid4().hex
        self._leader = False
        super().__init__(*args, **kwargs)

    def _hold(self) -> bool:
        ttl_ms = int(LOCK_TTL_S * 1000)
        if self._leader:
            self._leader = bool(self._redis.eval(_RENEW, 1, self._lock_key, self._token, ttl_ms))
            if not self._leader:
                log.warning("beat lost the leader lock; standing by")
        else:
            self._leader = bool(self._redis.set(self._lock_key, self._token, nx=True, px=ttl_ms))
            if self._leader:
                log.info("beat is the leader (lock %s)", self._lock_key)
        return self._leader

    def tick(self, *args: Any, **kwargs: Any) -> float:
        # Standby: check again well before a dead leader's lock would expire.
        if not self._hold():
            return LOCK_TTL_S / 5
        return min(float(super().tick(*args, **kwargs)), LOCK_TTL_S / 3)

    def close(self) -> None:
        try:
            if self._leader:
                self._redis.eval(_RELEASE, 1, self._lock_key, self._token)
        finally:
            super().close()
