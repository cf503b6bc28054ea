"""Kombu's Redis transports, with a channel that survives a closed connection.

Why: when a worker loses the broker (the Sentinel master dies), Celery's consumer
first calls ``Connection.collect()``, which closes the channels and then detaches the
transport (``transport.client = None``), and then ``Connection.close()``. A consumer
waiting on BRPOP when the master died fails its first close, inside ``collect()``, at
reading that BRPOP's reply, so the channel stays open. The second close, in
``close()``, drops the channel's connection pool and restores its unacknowledged
messages, which builds a new pool from ``transport.client``: kombu's ``_connparams``
raises ``AttributeError: 'NoneType' object has no attribute 'hostname'``, which
neither kombu's ``maybe_close_channel`` nor Celery's ``ignore_errors`` catch, and the
worker stops ("Unrecoverable error") instead of reconnecting.

Here a channel whose transport is detached raises redis' ``ConnectionError``: the
close swallows it as the broker error it is, and the consumer reconnects to the
promoted master. The messages stay in kombu's ``unacked`` hash; no worker refreshes
them any more, so a live worker's sweep requeues them one visibility timeout later
(corec_tasks/unacked.py), as for a worker that died.

Measured with Sentinel (tests/integration/test_sentinel_unacked.py). A plain
``redis://`` or ``rediss://`` broker closes the same way through the same
``_connparams`` when its server dies under a worker holding tasks, so those schemes
get the same channel.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.redis import Channel, SentinelChannel, SentinelTransport, Transport
from redis.exceptions import ConnectionError as RedisConnectionError

#: Broker URL schemes served by CoreC's transports: ``sentinel://`` (what CoreC builds
#: with ``COREC_REDIS_SENTINELS``), ``redis://`` and ``rediss://``.
SCHEMES = {
    "sentinel": "corec_tasks.broker_transport:CorecSentinelTransport",
    "redis": "corec_tasks.broker_transport:CorecRedisTransport",
    "rediss": "corec_tasks.broker_transport:CorecRedisTransport",
}


class _DetachedIsABrokerError:
    """A new pool for a detached transport is a broker error, not an AttributeError."""

    connection: Any

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        """Connection parameters from the kombu connection this channel belongs to, or,
        once that connection was collected or closed, a ``ConnectionError``."""
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError(
                "the broker connection was closed: unacknowledged messages are left to "
                "the visibility timeout sweep")  # fmt: skip
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[misc]
        return params


class CorecSentinelChannel(_DetachedIsABrokerError, SentinelChannel):
    """kombu's Sentinel channel, surviving a closed connection."""


class CorecSentinelTransport(SentinelTransport):
    """kombu's Sentinel transport, with :class:`CorecSentinelChannel`."""

    Channel = CorecSentinelChannel


class CorecRedisChannel(_DetachedIsABrokerError, Channel):
    """kombu's Redis channel, surviving a closed connection."""


class CorecRedisTransport(Transport):
    """kombu's Redis transport, with :class:`CorecRedisChannel`."""

    Channel = CorecRedisChannel


def register() -> None:
    """Serve the Redis broker URLs with CoreC's transports.

    By URL scheme, not Celery's ``broker_transport``: a kombu connection that fails over
    to the next sentinel (``Connection.switch``) picks its transport from the URL again.
    """
    TRANSPORT_ALIASES.update(SCHEMES)
