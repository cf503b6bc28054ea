"""Redis client construction (one place, so options stay consistent)."""

from __future__ import annotations

import redis

from corec_tasks.settings import Settings


def redis_client(settings: Settings, *, decode: bool = False) -> redis.Redis:
    """A client on the configured Redis; bytes by default (stream payloads are binary)."""
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=decode,
        health_check_interval=30,
        socket_keepalive=True,
    )
