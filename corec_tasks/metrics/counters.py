"""Cluster-wide event counters kept in Redis, for the Prometheus exporter.

Workers on many nodes do the counted work (self-repairs in block runs, redirections,
merges and splits in sync), so the counts live in one Redis hash,
``corec:metrics:totals``, that the exporter reads at scrape time. Prometheus
multiprocess mode would need every process on one host and a shared directory;
a hash needs neither.

Counting never fails the counted work: a Redis error here is logged and dropped
(a metric may then undercount; the block or the redirection is not retried for it).
A self-repair is counted once per (block, cycle): the caller counts only runs whose
compare-and-set won, and a redelivered run republishes without counting again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import redis

log = logging.getLogger(__name__)

#: The hash (under the settings' key prefix) holding every counter.
TOTALS = "corec:metrics:totals"
#: Field prefix of the per-group self-repair counters.
REPAIRS = "self_repairs:"


def add(store: Any, counts: Mapping[str, int]) -> None:
    """Add ``counts`` to the totals of ``store`` (a BlockStore: its client and prefix)."""
    nonzero = {k: int(v) for k, v in counts.items() if v}
    if not nonzero:
        return
    try:
        pipe = store.r.pipeline(transaction=False)
        key = store.settings.key(TOTALS)
        for field, n in nonzero.items():
            pipe.hincrby(key, field, n)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("metrics: could not count %s: %r", nonzero, exc)


def count_repairs(store: Any, runs: Iterable[Any]) -> None:
    """Count the self-repairs of ``runs`` (StoredBlocks whose write won), per group."""
    per_group: dict[str, int] = {}
    for stored in runs:
        result = stored.last_result or {}
        repaired = int(result.get("repaired") or 0)
        if repaired:
            group = str(result.get("group") or stored.block.spec.group)
            per_group[REPAIRS + group] = per_group.get(REPAIRS + group, 0) + repaired
    add(store, per_group)


def read(client: redis.Redis, key: str) -> dict[str, int]:
    """Every counter of the totals hash ``key`` (already prefixed)."""
    raw: Any = client.hgetall(key)
    out = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        out[name] = int(v)
    return out
