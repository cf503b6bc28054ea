"""Alerts on ``corec_alerts`` from the engine, rate-limited per (source, subject).

Each alert is ``{"level", "source", "message", "subject", ...}``. An incident raises
one alert: a marker ``corec:alert:<source>:<subject>`` (SET NX EX) holds back the
same (source, subject) for :data:`ALERT_TTL_S`, so a block unhealthy for ten cycles
in a row alerts once, and again only if it still is an hour later. The marker is
sealed with the stream key (``corec_tasks/streams/markers.py``): one someone else set,
one pinned without an expiry, or an old one copied back counts as absent, so holding
the Redis password is not enough to silence an alert.

What the engine checks after each block run (:func:`check_runs`):

* ``block.unhealthy``: a run that had input with an error rate above the block's
  ``max_errores`` or a fitness below its ``min_fitness``;
* ``block.self_repair``: a run that replaced more than :data:`REPAIR_RATE` of the
  block's entities;
* ``plugin``: the block's processor (plugin code) raised or returned bad shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from corec_tasks.settings import Settings
from corec_tasks.streams.bus import ALERT_TTL_S, StreamBus

log = logging.getLogger(__name__)

#: A run replacing more than this share of its block's entities alerts.
REPAIR_RATE = 0.1


def alert(
    settings: Settings,
    client: redis.Redis,
    level: str,
    source: str,
    subject: str,
    message: str,
    extra: Mapping[str, Any] | None = None,
    ttl_s: int = ALERT_TTL_S,
) -> bool:
    """Publish one alert unless (source, subject) alerted within ``ttl_s``; True if sent
    (:meth:`StreamBus.alert`)."""
    return StreamBus(settings, client).alert(level, source, subject, message, extra, ttl_s)


def run_problems(
    result: Mapping[str, Any], spec: Mapping[str, Any]
) -> list[tuple[str, str, str, str]]:
    """``(level, source, subject, message)`` for what is wrong with one block run (pure).

    A failing processor is one incident per processor (its subject), not per block.
    """
    out = []
    block = str(result["block_id"])
    if result.get("processor_error"):
        out.append(("error", "plugin", str(spec["processor"]),
                    f"block {block}: {result['processor_error']}"))  # fmt: skip
    selected = int(result.get("selected", 0))
    if selected:
        rate = int(result["errors"]) / selected
        if rate > float(spec["max_errores"]) or float(result["fitness"]) < float(
                spec["min_fitness"]):  # fmt: skip
            out.append(("warning", "block.unhealthy", block,
                        f"block {block} unhealthy in cycle {result['cycle']}: error rate "
                        f"{rate:.3f} (max {spec['max_errores']}), fitness "
                        f"{float(result['fitness']):.3f} (min {spec['min_fitness']})"))  # fmt: skip
    n = int(result.get("num_entidades", 0))
    repaired = int(result.get("repaired", 0))
    if n and repaired / n > REPAIR_RATE:
        out.append(("warning", "block.self_repair", block,
                    f"block {block} self-repaired {repaired} of {n} entities in cycle "
                    f"{result['cycle']} (above {REPAIR_RATE:.0%})"))  # fmt: skip
    return out


def check_runs(
    settings: Settings, client: redis.Redis, runs: Iterable[tuple[Mapping[str, Any], Any]]
) -> int:
    """Alert on each (result, spec dict) run's problems; return how many alerts went out."""
    sent = 0
    for result, spec in runs:
        for level, source, subject, message in run_problems(result, spec):
            extra = {"block_id": result["block_id"], "cycle": result["cycle"]}
            sent += alert(settings, client, level, source, subject, message, extra)
    return sent
