"""The Celery app: ``celery -A corec_tasks worker|beat|flower|call|inspect``.

Its configuration is ``corec_tasks.celeryconfig.build`` of this process's settings,
applied when the app first needs it: importing the app reads no environment.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import task_postrun, worker_init, worker_process_init, worker_ready

from corec_tasks import broker_transport
from corec_tasks.celeryconfig import build
from corec_tasks.redis_conn import redis_client
from corec_tasks.runtime import get_settings, reset
from corec_tasks.task_auth import load_key, mark_done
from corec_tasks.unacked import UnackedHeartbeat

# sentinel:// brokers: a worker that loses the master reconnects (corec_tasks/broker_transport.py).
broker_transport.register()
# Every task's messages are authenticated: signed when sent, checked before a worker
# runs them (corec_tasks/task_auth.py).
app = Celery("corec_tasks", task_cls="corec_tasks.task_auth:AuthenticatedTask",
             amqp="corec_tasks.task_auth:SigningAMQP")  # fmt: skip
# A promise: evaluated once, when the configuration is first read (a worker's start,
# a first send). The task modules, the framework's and the enabled plugins', are in it.
app.add_defaults(lambda: build(get_settings()))
# Redis broker: a worker keeps its unacknowledged tasks alive (corec_tasks/unacked.py).
app.steps["consumer"].add(UnackedHeartbeat)

log = logging.getLogger("corec_tasks")


@task_postrun.connect
def _task_done(task_id: str = "", state: str = "", **_: Any) -> None:
    mark_done(task_id, state)


@worker_init.connect
def _require_task_key(**_: Any) -> None:
    """A worker without the task key could check nothing: it does not start."""
    load_key(get_settings().data_dir)


@worker_process_init.connect
def _runtime_per_child(**_: Any) -> None:
    """A pool child builds its own runtime after the fork: its own settings read, its
    own Redis client and services, none shared with the parent or a sibling."""
    reset()
    get_settings()  # parsed now: a bad config stops the child at start, not a task


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
