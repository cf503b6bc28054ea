"""Unacknowledged broker tasks on the Redis transport: a worker heartbeat, and a view.

Kombu's Redis transport emulates acks: each delivered, not yet acknowledged message
is kept in the hash ``unacked`` and its tag in the sorted set ``unacked_index``,
scored with its delivery time. Every worker periodically requeues the tags older
than the visibility timeout (``QoS.restore_visible``). Left alone, a task running
longer than the timeout is delivered twice, so the timeout had to exceed the longest
task, and a dead node's tasks came back only after it (an hour at the old defaults).

:class:`UnackedHeartbeat` lets the timeout be short: on the consumer's event loop
(the thread kombu itself runs in) it re-scores, every ``heartbeat_s``, the tags this
worker holds (running, prefetched, waiting for an ETA or a retry countdown) with
``ZADD XX <now>``, through the channel's own prefixed client (only tags of requests
the worker still has: see :func:`held_tags`). A live worker keeps
its tasks however long they run; a killed or cut-off node stops refreshing, and any
live worker's sweep requeues its tasks about one visibility timeout later. ``XX``
only updates tags still in the index, so an acknowledged task is never revived.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps

from corec_tasks.runtime import get_settings

log = logging.getLogger(__name__)

#: kombu's names for the ack-emulation keys (``global_keyprefix`` is prepended).
UNACKED_INDEX = "unacked_index"


def held_tags(qos: Any) -> list[str]:
    """Delivery tags of tasks this worker still holds: delivered, not acknowledged, and
    still reserved, running or waiting for their ETA in this worker.

    A task that finished but whose ack (or reject) failed, say during a network cut,
    is no longer a request here: it is not refreshed, so a sweep requeues it and it
    runs again (idempotently) instead of staying unacknowledged for good.
    """
    from celery.worker import state

    live = {getattr(req.message, "delivery_tag", None) for req in list(state.requests.values())}
    dirty: set[str] = getattr(qos, "_dirty", set())
    return [tag for tag in list(qos._delivered) if tag in live and tag not in dirty]


def refresh(channel: Any, now: float | None = None) -> int:
    """Re-score this channel's unacknowledged tags to ``now``; return how many."""
    tags = held_tags(channel.qos)
    if not tags:
        return 0
    stamp = time.time() if now is None else now
    with channel.conn_or_acquire() as client:
        client.zadd(channel.unacked_index_key, dict.fromkeys(tags, stamp), xx=True)
    return len(tags)


class UnackedHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]  # Celery: untyped
    """Consumer bootstep: keep this worker's unacknowledged Redis messages fresh."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None
        self.consumer: Any = None

    def start(self, parent: Any) -> None:
        channel = getattr(parent.task_consumer, "channel", None)
        if channel is None or not hasattr(channel, "unacked_index_key"):
            return  # not the Redis transport: the broker itself redelivers
        self.consumer = parent
        interval = get_settings().env.heartbeat_s
        self.tref = parent.timer.call_repeatedly(interval, self.beat, priority=10)
        log.info("unacked heartbeat every %.1fs (visibility timeout %ss)", interval,
                 channel.visibility_timeout)  # fmt: skip

    def beat(self) -> None:
        """One refresh; a broker error is logged and the next beat tries again."""
        task_consumer = getattr(self.consumer, "task_consumer", None)
        if task_consumer is None:
            return
        try:
            refresh(task_consumer.channel)
        except Exception as exc:  # the connection is down; kombu reconnects on its own
            log.warning("unacked heartbeat failed: %r", exc)

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


def unacked_stats(client: Any, prefix: str, visibility_timeout: float) -> dict[str, Any]:
    """Count and oldest age of unacknowledged broker tasks; ``stale`` ones are older than
    the visibility timeout (their worker stopped refreshing them: a sweep will requeue)."""
    key = f"{prefix}{UNACKED_INDEX}"
    now = time.time()
    count = int(client.zcard(key))
    oldest = client.zrange(key, 0, 0, withscores=True)
    stale = int(client.zcount(key, "-inf", now - visibility_timeout))
    age = round(now - float(oldest[0][1]), 1) if oldest else None
    return {"count": count, "oldest_age_s": age, "stale": stale}
