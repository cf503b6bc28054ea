"""Cycles: which blocks run, in what order, in how many Celery messages.

A cycle is a Celery chord: a group of ``run_chunk`` tasks (several blocks per
message, since Celery costs about a millisecond per message) routed to the queue
of their channel, and a ``finish_cycle`` callback that lands the results in
``bloques``. Plugin blocks go first, then channels by the seed's priority
(security, alerts, analysis, generation, generic).

Kombu's Redis transport can lose a message outright: a worker pops it (``BRPOP``)
and only then records it as unacknowledged, so a worker killed, or a Redis stopped,
between the two drops it (celery/kombu#305, celery/celery#4354), and the chord then
never finishes. :func:`rescue_stalled` (on beat, with the persister) is the safety net:
a cycle whose blocks have stopped running with some not yet run is sent those blocks
again, after the broker's own redelivery has had its chance. Running a block twice for
one cycle is harmless (the engine skips and republishes), so nothing runs twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import chord

from corec_tasks.alerts import alert
from corec_tasks.celery import app
from corec_tasks.config import queue_for_channel
from corec_tasks.settings import Settings

log = logging.getLogger(__name__)
#: The seed's priorities: 2 security, 4 critical alerts, 3 analysis, 5 generation, 1 generic.
CHANNEL_PRIORITY = {2: 0, 4: 1, 3: 2, 5: 3, 1: 4}
#: Blocks per Celery message by default (chosen with `make bench ONLY=cycle_wall_s`).
DEFAULT_CHUNK = 62
#: The block tasks a cycle sends (``corec_tasks.blocks.tasks``), by name: the tasks
#: module imports this one, and a process that has not imported it still sends the same
#: messages (Celery falls back to ``send_task``).
RUN_CHUNK = "corec.blocks.run_chunk"
FINISH_CYCLE = "corec.blocks.finish_cycle"

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
    number = cycle_number(settings, client, dispatch_id)
    chunks = plan_chunks(metas, plugin_groups, chunk, interval)
    ts = _cycle_timestamp(settings, client, number)
    header = [_run_chunk(c, number, ts) for c in chunks]
    blocks = sum(len(c.block_ids) for c in chunks)
    if not header:
        return {"cycle": number, "blocks": 0, "tasks": 0, "task_id": None}
    started = time.time()
    ids = [b for c in chunks for b in c.block_ids]
    _open_cycle(settings, client, number, {"ids": json.dumps(ids), "blocks": blocks,
                                           "started": repr(started), "ts": repr(ts),
                                           "chunk": chunk})  # fmt: skip
    result = chord(header)(_finish_cycle(number, blocks, started, ts))
    return {"cycle": number, "blocks": blocks, "tasks": len(header), "task_id": result.id}


def _run_chunk(c: Chunk, number: int, ts: float) -> Any:
    """The ``run_chunk`` signature of one chunk, on its channel's queue."""
    return app.signature(RUN_CHUNK, (list(c.block_ids), number, ts), queue=c.queue)


def _finish_cycle(
    number: int, blocks: int, started: float, ts: float, rescue: dict[str, Any] | None = None
) -> Any:
    """The ``finish_cycle`` signature of a cycle, waiting for its chunks' results."""
    kwargs = {} if rescue is None else {"rescue": rescue}
    return app.signature(FINISH_CYCLE, (number, blocks, started, ts), kwargs)


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


def _plan_key(settings: Settings, number: int) -> str:
    """A cycle's plan while it is open: its block ids and what its finish needs."""
    return settings.key(f"corec:cycle:plan:{number}")


def _watch_key(settings: Settings, number: int) -> str:
    """What :func:`rescue_stalled` saw of an open cycle: blocks missing, since when."""
    return settings.key(f"corec:cycle:watch:{number}")


def _open_cycle(
    settings: Settings, client: redis.Redis, number: int, plan: dict[Any, Any]
) -> None:
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.zadd(settings.key(OPEN_CYCLES), {str(number): now}, nx=True)
    pipe.hset(_plan_key(settings, number), mapping=plan)
    pipe.expire(_plan_key(settings, number), CYCLE_MEMORY_S)
    for name in (OPEN_CYCLES, INCOMPLETE_CYCLES):
        pipe.zremrangebyscore(settings.key(name), "-inf", now - CYCLE_MEMORY_S)
    pipe.execute()


def close_cycle(settings: Settings, client: redis.Redis, number: int, complete: bool) -> None:
    """Mark cycle ``number`` finished; remember it if it is incomplete."""
    pipe = client.pipeline(transaction=False)
    pipe.zrem(settings.key(OPEN_CYCLES), str(number))
    pipe.delete(_plan_key(settings, number), _watch_key(settings, number))
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


def _strings(raw: Any) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


#: Open cycles younger than this are not looked at (a healthy cycle takes about 1 s).
WATCH_AFTER_S = 10.0
#: A cycle is rescued only after this long without one more of its blocks running
#: (or a quarter of COREC_CYCLE_RESCUE_S, if that is shorter).
QUIET_S = 15.0
#: Rescues of one cycle before it is recorded incomplete (a block that kills its
#: worker every time, say) instead of being retried for ever.
RESCUE_TRIES = 3


def rescue_stalled(
    settings: Settings, client: redis.Redis, store: Any, plugin_groups: set[str],
    *, now: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Send again the blocks of open cycles that stopped progressing; return a report.

    A cycle is rescued when it was dispatched at least ``COREC_CYCLE_RESCUE_S`` ago (by
    then a dead worker's tasks have come back through the broker, if they were going
    to), some of its blocks have not run for it, and none has run for ``QUIET_S``. The
    blocks missing go out again as a chord of their own, whose callback records the
    cycle (``rescued`` in its record) and one ``warning`` goes to ``corec_alerts``.
    After ``RESCUE_TRIES`` rescues the cycle is recorded incomplete instead.
    """
    now = time.time() if now is None else now
    rescue_after = settings.env.cycle_rescue_s
    quiet = min(QUIET_S, rescue_after / 4)
    report: dict[str, Any] = {"watched": 0, "rescued": {}, "given_up": {}}
    opened: Any = client.zrangebyscore(settings.key(OPEN_CYCLES), "-inf", now - WATCH_AFTER_S,
                                       withscores=True)  # fmt: skip
    for raw, dispatched in opened:
        number = int(raw)
        plan = _strings(client.hgetall(_plan_key(settings, number)))
        if "ids" not in plan:
            continue  # closed meanwhile, or dispatched by a version that kept no plan
        report["watched"] += 1
        ids: list[str] = json.loads(plan["ids"])
        metas = store.metas(ids)
        merged = len(ids) - len(metas)  # merged away since dispatch: nothing to run
        missing = [m for m in metas if int(m.get("last_cycle", -1)) < number]
        watch_key = _watch_key(settings, number)
        seen = _strings(client.hgetall(watch_key))
        tries = int(seen.get("tries", 0))
        if not seen or len(missing) < int(seen["missing"]):
            client.hset(watch_key, mapping={"missing": len(missing), "since": repr(now),
                                            "tries": tries})  # fmt: skip
            client.expire(watch_key, CYCLE_MEMORY_S)
            continue
        if now - float(dispatched) < rescue_after or now - float(seen["since"]) < quiet:
            continue
        # One rescuer per window, even if two persist tasks overlap.
        if not client.set(settings.key(f"corec:cycle:rescuing:{number}"), 1, nx=True,
                          ex=int(rescue_after)):  # fmt: skip
            continue
        client.hset(watch_key, mapping={"missing": len(missing), "since": repr(now),
                                        "tries": tries + 1})  # fmt: skip
        blocks, started, ts = int(plan["blocks"]), float(plan["started"]), float(plan["ts"])
        missing_ids = sorted(m["spec"]["id"] for m in missing)
        shown = ", ".join(missing_ids[:10]) + (" ..." if len(missing_ids) > 10 else "")
        if tries >= RESCUE_TRIES:
            rescue = {"merged": merged, "blocks": 0, "never_ran": missing_ids[:100]}
            _finish_cycle(number, blocks, started, ts, rescue).delay([])
            report["given_up"][number] = len(missing_ids)
            log.error("[cycle] %d: %d blocks never ran after %d rescues (%s)", number,
                      len(missing_ids), tries, shown)  # fmt: skip
            continue
        rescue = {"merged": merged, "blocks": len(missing_ids)}
        chunks = plan_chunks(missing, plugin_groups, int(plan["chunk"]))
        header = [_run_chunk(c, number, ts) for c in chunks]
        if header:
            chord(header)(_finish_cycle(number, blocks, started, ts, rescue))
        else:  # every block ran, but the chord's callback never came: record the cycle
            _finish_cycle(number, blocks, started, ts, rescue).delay([])
        report["rescued"][number] = len(missing_ids)
        message = (f"cycle {number}: {len(missing_ids)} of {blocks} blocks had not run "
                   f"{now - float(dispatched):.0f} s after dispatch, none running for "
                   f"{now - float(seen['since']):.0f} s; sent again (rescue {tries + 1} of "
                   f"{RESCUE_TRIES}): {shown}")  # fmt: skip
        alert(settings, client, "warning", "cycle.rescue", f"{number}.{tries + 1}", message,
              {"cycle": number, "blocks": missing_ids[:100]})  # fmt: skip
    return report
