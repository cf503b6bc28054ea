"""Kombu's Redis Sentinel transport, with a channel that survives a closed connection.

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
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.redis import SentinelChannel, SentinelTransport
from redis.exceptions import ConnectionError as RedisConnectionError

#: ``sentinel://`` URLs, the broker URL CoreC builds with ``COREC_REDIS_SENTINELS``.
SCHEME = "sentinel"
TRANSPORT = "corec_tasks.broker_transport:CorecSentinelTransport"


class CorecSentinelChannel(SentinelChannel):
    """kombu's Sentinel channel; a new pool for a detached transport is a broker error."""

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        """Connection parameters from the kombu connection this channel belongs to, or,
        once that connection was collected or closed, a ``ConnectionError``."""
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError(
                "the broker connection was closed: unacknowledged messages are left to "
                "the visibility timeout sweep")  # fmt: skip
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[no-untyped-call]
        return params


class CorecSentinelTransport(SentinelTransport):
    """kombu's Sentinel transport, with :class:`CorecSentinelChannel`."""

    Channel = CorecSentinelChannel


def register() -> None:
    """Serve ``sentinel://`` broker URLs with :class:`CorecSentinelTransport`.

    By URL scheme, not Celery's ``broker_transport``: a kombu connection that fails over
    to the next sentinel (``Connection.switch``) picks its transport from the URL again.
    """
    TRANSPORT_ALIASES[SCHEME] = TRANSPORT
