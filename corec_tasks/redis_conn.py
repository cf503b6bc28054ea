"""Redis client construction (one place, so options stay consistent)."""

from __future__ import annotations

from typing import Any

import redis

from corec_tasks.settings import Settings


def redis_client(settings: Settings, *, decode: bool = False, **options: Any) -> redis.Redis:
    """A client on the configured Redis; bytes by default (stream payloads are binary).

    ``options`` (socket timeouts, ``retry`` ...) override the defaults. Every CoreC
    client is made here, so how CoreC reaches Redis (a URL today; Sentinel would be
    one more branch) is decided in one place.
    """
    kwargs: dict[str, Any] = {"decode_responses": decode, "health_check_interval": 30,
                              "socket_keepalive": True, **options}  # fmt: skip
    return redis.Redis.from_url(settings.redis_url, **kwargs)
