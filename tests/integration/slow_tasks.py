"""A test-only Celery task that runs long and counts its deliveries (workers load it
with ``-I tests.integration.slow_tasks``)."""

from __future__ import annotations

import time

from corec_tasks.celery import app
from corec_tasks.redis_conn import redis_client
from corec_tasks.runtime import get_settings


@app.task(name="corec.test.sleep")
def sleep(seconds: float, name: str) -> int:
    """Count this delivery under ``name``, sleep, mark it done; return the delivery count."""
    settings = get_settings()
    client = redis_client(settings)
    runs = int(client.incr(settings.key(f"test:sleep:{name}:runs")))
    time.sleep(seconds)
    client.incr(settings.key(f"test:sleep:{name}:done"))
    return runs
