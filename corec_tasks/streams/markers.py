"""Rate-limit markers no one without the stream key can set: alerts cannot be silenced.

An alert goes out once per incident: a marker (``corec:alert:<source>:<subject>``, the
stream backlog's ``corec:streams:backlog_alert:<stream>``) holds the next one back for
a while. Whoever holds the Redis password could set that marker first, pinned with no
expiry, and no alert of that kind would ever go out again. So a marker is *sealed* with
the stream key (``signing.seal``) and holds only if

- its seal is valid for its own name (not written by someone without the key),
- it was sealed at most its ttl ago (not an old one copied back), and
- it expires (TTL -1 is a pinned marker);

anything else counts as absent and is replaced, by one process only (a compare-and-set
script), so the alert goes out once, not once per process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis

from corec_tasks.settings import Settings
from corec_tasks.streams.signing import seal, unseal

log = logging.getLogger(__name__)

# Replace marker KEYS[1] by ARGV[2] (EX ARGV[3]) if it still holds ARGV[1] (the value
# the caller judged not valid) or is gone.
_REPLACE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


def take(
    settings: Settings, client: redis.Redis, key: bytes, name: str, ttl_s: int, now: float
) -> bool:
    """Take marker ``name`` (unprefixed) for ``ttl_s``; False while a valid one holds."""
    value = seal(key, name, b"", now)
    if client.set(settings.key(name), value, nx=True, ex=ttl_s):
        return True
    ((held, seen),) = read(settings, client, key, [(name, ttl_s)], now)
    if held:
        return False
    log.warning("rate-limit marker %s was not sealed by this deployment, pinned or stale: "
                "it counts as absent", name)  # fmt: skip
    got: Any = client.eval(_REPLACE, 1, settings.key(name), seen, value, ttl_s)
    return bool(got)


def put(
    settings: Settings, client: redis.Redis, key: bytes, name: str, ttl_s: int, now: float
) -> None:
    """Set marker ``name`` for ``ttl_s`` whatever holds it."""
    client.set(settings.key(name), seal(key, name, b"", now), ex=ttl_s)


def read(
    settings: Settings,
    client: redis.Redis,
    key: bytes,
    markers: Sequence[tuple[str, float]],
    now: float,
) -> list[tuple[bool, bytes | str]]:
    """For each ``(name, ttl_s)``: whether a valid marker holds, and the value read
    ("" if none); one round trip for them all."""
    pipe = client.pipeline(transaction=False)
    for name, _ in markers:
        pipe.get(settings.key(name))
        pipe.ttl(settings.key(name))
    replies: list[Any] = pipe.execute()
    out: list[tuple[bool, bytes | str]] = []
    for j, (name, ttl_s) in enumerate(markers):
        current, ttl = replies[2 * j], int(replies[2 * j + 1])
        if current is None:
            out.append((False, ""))
            continue
        held = ttl != -1 and unseal(key, name, current, now, ttl_s)[0] is not None
        out.append((held, current))
    return out
