"""The Celery app: ``celery -A corec_tasks worker|beat|flower|call|inspect``.

Configuration comes from the top-level ``celeryconfig`` module, which reads the
typed settings object; nothing here reads the environment.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from corec_tasks.redis_conn import redis_client
from corec_tasks.settings import get_settings
from corec_tasks.unacked import UnackedHeartbeat

app = Celery("corec_tasks")
app.config_from_object("celeryconfig")
# Redis broker: a worker keeps its unacknowledged tasks alive (corec_tasks/unacked.py).
app.steps["consumer"].add(UnackedHeartbeat)
# Task modules (the framework's and the enabled plugins') are listed in celeryconfig.

log = logging.getLogger("corec_tasks")


@worker_ready.connect
def _check_redis_policy(sender: Any = None, **_: Any) -> None:
    """Warn when Redis may evict keys: queued tasks and stream entries would vanish."""
    try:
        client = redis_client(get_settings(), decode=True)
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except Exception as exc:  # managed Redis may forbid CONFIG; that is not fatal
        log.info("could not read Redis maxmemory-policy (%s); make sure it is noeviction", exc)
        return
    if policy != "noeviction":
        log.warning(
            "Redis maxmemory-policy is %r, not 'noeviction': under memory pressure Redis "
            "may evict queued tasks and stream entries. Set maxmemory-policy noeviction.",
            policy,
        )
