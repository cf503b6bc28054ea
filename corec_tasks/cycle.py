"""Cycles: which blocks run, in what order, in how many Celery messages.

A cycle is a Celery chord: a group of ``run_chunk`` tasks (several blocks per
message, since Celery costs about a millisecond per message) routed to the queue
of their channel, and a ``finish_cycle`` callback that lands the results in
``bloques``. Plugin blocks go first, then channels by the seed's priority
(security, alerts, analysis, generation, generic).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from corec_tasks.config import queue_for_channel
from corec_tasks.settings import Settings

#: The seed's priorities: 2 security, 4 critical alerts, 3 analysis, 5 generation, 1 generic.
CHANNEL_PRIORITY = {2: 0, 4: 1, 3: 2, 5: 3, 1: 4}
#: Blocks per Celery message by default (chosen with `make bench ONLY=cycle_wall_s`).
DEFAULT_CHUNK = 62

# Cycle numbers: one per dispatching task id, so a redelivered dispatch reuses its number.
_CYCLE_FOR_TASK = """
local n = redis.call('GET', KEYS[1])
if n then return tonumber(n) end
n = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], n, 'EX', 86400)
return n
"""


@dataclass(frozen=True)
class Chunk:
    """Blocks that travel in one task message."""

    queue: str
    block_ids: tuple[str, ...]


def cycle_number(settings: Settings, client: redis.Redis, dispatch_id: str | None) -> int:
    """A new cycle number; the same one again for the same ``dispatch_id``."""
    counter = settings.key("corec:cycle:seq")
    if dispatch_id is None:
        return int(client.incr(counter))
    key = settings.key(f"corec:cycle:dispatch:{dispatch_id}")
    return int(client.eval(_CYCLE_FOR_TASK, 2, key, counter))


def plan_chunks(
    metas: Sequence[dict[str, Any]], plugin_groups: set[str], chunk: int = DEFAULT_CHUNK,
    interval: float | None = None,
) -> list[Chunk]:  # fmt: skip
    """Order blocks by priority and cut them into per-queue chunks of ``chunk`` blocks.

    With ``interval``, only blocks whose ``intervalo_s`` equals it take part.
    """
    if chunk < 1:
        raise ValueError("chunk must be >= 1")

    def rank(meta: dict[str, Any]) -> tuple[int, int, str]:
        spec = meta["spec"]
        plugin = 0 if spec["group"] in plugin_groups else 1
        return plugin, CHANNEL_PRIORITY.get(spec["canal"], 9), spec["id"]

    chosen = [
        m for m in metas
        if interval is None or float(m.get("extra", {}).get("intervalo_s", 300.0)) == interval
    ]  # fmt: skip
    by_queue: dict[tuple[int, str], list[str]] = {}
    for meta in sorted(chosen, key=rank):
        spec = meta["spec"]
        queue = queue_for_channel(int(spec["canal"]))
        by_queue.setdefault((rank(meta)[0], queue), []).append(spec["id"])
    out = []
    for (_, queue), ids in by_queue.items():
        out += [Chunk(queue, tuple(ids[i : i + chunk])) for i in range(0, len(ids), chunk)]
    return out


def dispatch(
    settings: Settings,
    client: redis.Redis,
    metas: Sequence[dict[str, Any]],
    plugin_groups: set[str],
    *,
    dispatch_id: str | None = None,
    chunk: int = DEFAULT_CHUNK,
    interval: float | None = None,
) -> dict[str, Any]:
    """Send one cycle as a chord; return its number and shape (does not wait)."""
    from celery import chord

    from corec_tasks.block_tasks import finish_cycle, run_chunk

    number = cycle_number(settings, client, dispatch_id)
    chunks = plan_chunks(metas, plugin_groups, chunk, interval)
    ts = _cycle_timestamp(settings, client, number)
    header = [run_chunk.s(list(c.block_ids), number, ts).set(queue=c.queue) for c in chunks]
    blocks = sum(len(c.block_ids) for c in chunks)
    if not header:
        return {"cycle": number, "blocks": 0, "tasks": 0, "task_id": None}
    _open_cycle(settings, client, number)
    result = chord(header)(finish_cycle.s(number, blocks, time.time(), ts))
    return {"cycle": number, "blocks": blocks, "tasks": len(header), "task_id": result.id}


def _cycle_timestamp(settings: Settings, client: redis.Redis, number: int) -> float:
    """The cycle's timestamp, fixed at first dispatch so every redelivery agrees."""
    key = settings.key(f"corec:cycle:ts:{number}")
    client.set(key, repr(time.time()), nx=True, ex=7 * 86400)
    return float(client.get(key) or time.time())


#: Cycles dispatched and not yet finished, scored by dispatch time.
OPEN_CYCLES = "corec:cycles:open"
#: Cycles that finished without every block in ``bloques``, scored by finish time.
INCOMPLETE_CYCLES = "corec:cycles:incomplete"
#: How long either set remembers a cycle.
CYCLE_MEMORY_S = 7 * 86400


def _open_cycle(settings: Settings, client: redis.Redis, number: int) -> None:
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.zadd(settings.key(OPEN_CYCLES), {str(number): now}, nx=True)
    for name in (OPEN_CYCLES, INCOMPLETE_CYCLES):
        pipe.zremrangebyscore(settings.key(name), "-inf", now - CYCLE_MEMORY_S)
    pipe.execute()


def close_cycle(settings: Settings, client: redis.Redis, number: int, complete: bool) -> None:
    """Mark cycle ``number`` finished; remember it if it is incomplete."""
    pipe = client.pipeline(transaction=False)
    pipe.zrem(settings.key(OPEN_CYCLES), str(number))
    if not complete:
        pipe.zadd(settings.key(INCOMPLETE_CYCLES), {str(number): time.time()})
    pipe.execute()


def cycle_health(settings: Settings, client: redis.Redis) -> dict[str, Any]:
    """Cycles dispatched but unfinished for longer than ``cycle_overdue_s``, and cycles
    recorded incomplete (newest last, at most 20 of each)."""
    bound = time.time() - settings.env.cycle_overdue_s
    overdue: Any = client.zrangebyscore(settings.key(OPEN_CYCLES), "-inf", bound)
    incomplete: Any = client.zrange(settings.key(INCOMPLETE_CYCLES), -20, -1)
    return {
        "overdue": [int(c) for c in overdue[-20:]],
        "incomplete": [int(c) for c in incomplete],
    }
