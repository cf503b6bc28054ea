"""Redis client construction (one place, so options stay consistent)."""

from __future__ import annotations

from typing import Any

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel

from corec_tasks.settings import Settings


def redis_client(settings: Settings, *, decode: bool = False, **options: Any) -> redis.Redis:
    """A client on the configured Redis; bytes by default (stream payloads are binary).

    ``options`` (socket timeouts, ``retry`` ...) override the defaults. Every CoreC
    client is made here, so how CoreC reaches Redis is decided in one place: the URL,
    or with ``COREC_REDIS_SENTINELS`` the master the sentinels name. A Sentinel client
    asks them again whenever its connection fails, so it follows a failover.
    """
    kwargs: dict[str, Any] = {"decode_responses": decode, "health_check_interval": 30,
                              "socket_keepalive": True, **options}  # fmt: skip
    if not settings.sentinels:
        return redis.Redis.from_url(settings.redis_url, **kwargs)
    # REDIS_URL gives the master's password, user and database; its host is not used.
    parsed: dict[str, Any] = parse_url(settings.env.redis_url or "redis://")  # type: ignore[no-untyped-call]
    master = {k: v for k, v in parsed.items() if k in ("db", "username", "password")}
    sentinel = Sentinel(settings.sentinels,
                        sentinel_kwargs=sentinel_kwargs(settings))  # fmt: skip
    client: redis.Redis = sentinel.master_for(
        settings.env.redis_master, redis_class=redis.Redis, **master, **kwargs)
    return client


def sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """How to reach the sentinels themselves (for redis-py, kombu and Celery alike)."""
    out: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
    if settings.env.redis_sentinel_password:
        out["password"] = settings.env.redis_sentinel_password
    return out
