"""Signed Redis values: the state the trading path reads to decide an order or a profit.

Anyone holding the Redis password can ``LPUSH``, ``HSET`` or ``SET``. So every value the
trading path trusts (price history, the feeds' state, the allocation book, a position's
allocation, an asset's pending intent, the paper exchange's orders, the last VIX) is
stored *sealed*: ``<hex HMAC-SHA256>.<body>``, the MAC under the deployment's stream key
(``corec_tasks/streams/signing.py``, the key signed streams use) over

    b"corec-redis-v1\\n" + name + b"\\n" + body

where ``name`` is the full Redis key, plus ``"\\n" + field`` for a hash field. A value
without a valid MAC is never used: its reader skips it, counts it (:attr:`Seals.rejected`),
logs it, and raises one ``error`` alert per family and hour (source ``redis.signature``,
``StreamBus.alert``).

What a seal does not stop: a valid value copied to another key or field fails (the name
is signed), but one copied back into the *same* key or field is a value CoreC wrote there
before (a replay), and a key can always be deleted. Readers that care say how they
bound it (the price history orders and ages its elements by their signed time).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections import Counter
from typing import Any

import redis

from corec_tasks.errors import StreamError
from corec_tasks.settings import Settings
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.signing import load_key

log = logging.getLogger(__name__)

_DOMAIN = b"corec-redis-v1\n"
_MAC_HEX = 64
#: The alert source of a value that fails its seal.
ALERT_SOURCE = "redis.signature"


def seal(key: bytes, name: str, body: bytes) -> bytes:
    """``body`` sealed for the Redis key (or ``key\\nfield``) ``name``."""
    mac = hmac.new(key, _DOMAIN + name.encode() + b"\n" + body, hashlib.sha256).hexdigest()
    return mac.encode() + b"." + body


def unseal(key: bytes, name: str, raw: bytes | str | None) -> bytes | None:
    """The body of ``raw`` if it is sealed for ``name`` under ``key``, else None."""
    if raw is None:
        return None
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) <= _MAC_HEX or data[_MAC_HEX : _MAC_HEX + 1] != b".":
        return None
    body = data[_MAC_HEX + 1 :]
    if not hmac.compare_digest(seal(key, name, body)[:_MAC_HEX], data[:_MAC_HEX]):
        return None
    return body


class Seals:
    """Seal and open one process's trusted Redis values; report the ones that fail."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.client = client
        self.key = load_key(settings)
        #: Values refused since this object was made, by family.
        self.rejected: Counter[str] = Counter()

    def seal(self, name: str, body: bytes) -> bytes:
        return seal(self.key, name, body)

    def seal_json(self, name: str, value: Any) -> bytes:
        """``value`` as compact JSON, sealed (Decimal travels as a string)."""
        return self.seal(name, json.dumps(value, separators=(",", ":"), default=str).encode())

    def open(self, family: str, name: str, raw: bytes | str | None) -> bytes | None:
        """The body of ``raw`` (None if absent); a value that fails its seal is
        reported (:meth:`reject`) and None."""
        if raw is None:
            return None
        body = unseal(self.key, name, raw)
        if body is None:
            self.reject(family, name, "no valid seal")
        return body

    def open_json(self, family: str, name: str, raw: bytes | str | None) -> Any:
        """The JSON in ``raw``'s body, or None (absent, unsealed, or not JSON)."""
        body = self.open(family, name, raw)
        if body is None:
            return None
        try:
            return json.loads(body)
        except ValueError:
            self.reject(family, name, "sealed but not JSON")
            return None

    def reject(self, family: str, name: str, why: str) -> None:
        """Count, log and alert (once per family and hour) a value not used."""
        self.rejected[family] += 1
        log.warning("%s: %s in %s: not written by CoreC, not used", ALERT_SOURCE, why, name)
        try:
            with StreamBus(self.settings, self.client) as bus:  # closes its publisher
                bus.alert("error", ALERT_SOURCE, family,
                          f"a value of {name} has {why} and was not used "
                          f"({self.rejected[family]} so far in this process); someone who "
                          "is not CoreC writes to Redis", {"key": name})  # fmt: skip
        except (redis.RedisError, StreamError) as exc:
            log.warning("could not alert on an unsealed value of %s: %r", name, exc)
