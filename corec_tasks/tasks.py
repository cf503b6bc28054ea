"""Foundation tasks: health, stream persistence, partition upkeep.

Each is idempotent: a redelivered or doubled run changes nothing twice.
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict
from typing import Any

from celery.signals import task_prerun

from corec_tasks.celery import app
from corec_tasks.db import make_engine
from corec_tasks.discovery import enabled
from corec_tasks.runtime import Runtime, get_settings, runtime
from corec_tasks.storage.partitions import ensure_partitions
from corec_tasks.streams.persister import persist_once

#: The framework's jobs beat runs; each run is counted in Redis
#: (``corec:jobs:<task>:runs``, ``:last``), and so is each enabled plugin's beat task.
PERIODIC = frozenset({
    "corec.streams.persist", "corec.db.partitions", "corec.blocks.cycle",
    "corec.blocks.persist", "corec.blocks.redirect", "corec.blocks.audit",
})  # fmt: skip


def periodic_tasks() -> frozenset[str]:
    """The framework's periodic tasks and those of the enabled plugins' beat entries."""
    return runtime().service("corec.periodic_tasks", _periodic_tasks)


def _periodic_tasks(rt: Runtime) -> frozenset[str]:
    return PERIODIC | {e.task for p in enabled(rt.settings) for e in p.manifest.beat}


@task_prerun.connect
def _count_periodic_run(task: Any = None, **_: Any) -> None:
    """Count runs of periodic jobs: `corec status` shows them; tests check beat with them."""
    if task is None or task.name not in periodic_tasks():
        return
    rt = runtime()
    key = rt.settings.key(f"corec:jobs:{task.name}")
    pipe = rt.redis.pipeline(transaction=False)
    pipe.incr(f"{key}:runs")
    pipe.set(f"{key}:last", repr(time.time()))
    pipe.execute()


@app.task(name="corec.ping")
def ping() -> dict[str, Any]:
    """Answer with this worker's node name (a cheap end-to-end check)."""
    return {"ok": True, "node": socket.gethostname()}


@app.task(name="corec.streams.persist", ignore_result=True)
def persist_streams(streams: list[str] | None = None, max_batches: int = 20) -> dict[str, Any]:
    """Move stream entries into PostgreSQL ``eventos`` (ack after commit)."""
    stats = persist_once(get_settings(), streams=streams, max_batches=max_batches)
    return asdict(stats)


@app.task(name="corec.db.partitions")
def partition_upkeep() -> dict[str, Any]:
    """Create the current month's partitions and the next ones; return what was created."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        created = ensure_partitions(engine, months_ahead=settings.env.partitions_ahead)
    finally:
        engine.dispose()
    return {"ok": True, "created": created}
