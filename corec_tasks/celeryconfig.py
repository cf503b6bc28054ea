"""Celery's configuration as a function of CoreC's typed settings (never the reverse).

At-least-once delivery: tasks are acknowledged after they run (late acks), are
requeued when a worker dies mid-task, and long tasks are prefetched one at a time.
On the Redis broker a worker refreshes its unacknowledged tasks every few seconds
(corec_tasks/unacked.py), so the visibility timeout is short (30 s): a live
worker keeps a task however long it runs, and a dead or cut-off node's tasks are
requeued by a live worker's sweep within about a minute. With ``COREC_BROKER_URL``
pointing at RabbitMQ, the broker itself requeues a dead consumer's tasks at once.
Every task is idempotent, so a redelivery never applies twice.

A function rather than module globals: the app applies ``build(settings)`` when it
first needs its configuration (corec_tasks/celery.py), and a test builds the
configuration of its own settings without re-importing a module.
"""

from __future__ import annotations

from typing import Any

from kombu.entity import Queue

from beat_schedule import build_beat_schedule
from corec_tasks.config import CELERY_DEFAULT_QUEUE, CHANNEL_QUEUES
from corec_tasks.discovery import enabled
from corec_tasks.redis_conn import sentinel_kwargs
from corec_tasks.settings import Settings
from corec_tasks.wiring import task_modules, task_routes

#: The framework's task modules; each enabled plugin's follow ("tasks" in its plugin.json).
FRAMEWORK_TASKS = ("corec_tasks.tasks", "corec_tasks.blocks.tasks", "corec_tasks.plugin_tasks")


def build(settings: Settings) -> dict[str, Any]:
    """Celery's settings (lowercase names) for ``settings`` and its enabled plugins."""
    env = settings.env
    plugins = enabled(settings)
    broker_url = env.broker_url or settings.redis_url
    amqp = broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))

    # Unacknowledged tasks whose worker stopped refreshing them (it died or is cut off)
    # are requeued after visibility_timeout_s; a live worker refreshes every heartbeat_s.
    transport: dict[str, object] = {"visibility_timeout": env.visibility_timeout_s}
    if settings.redis_prefix:
        transport["global_keyprefix"] = settings.redis_prefix
    # With COREC_REDIS_SENTINELS, redis_url is Celery's sentinel:// list; kombu and the
    # result backend ask the sentinels for the master and follow a failover.
    if settings.sentinels:
        transport["master_name"] = env.redis_master
        transport["sentinel_kwargs"] = sentinel_kwargs(settings)
    # Tasks of a worker that died are requeued by any live worker's sweep, every
    # restore_interval_s (kombu's default throttle would make that 10x longer), all of
    # them at once (no restore limit). A sweep takes milliseconds; a worker killed during
    # one leaves its mutex behind, which would block every sweep for kombu's default
    # 300 s, so it expires after 30 s. Socket timeouts keep a cut-off node from hanging.
    redis_broker = dict(
        transport,
        unacked_restore_interval=env.restore_interval_s,
        unacked_restore_throttle=1,
        unacked_mutex_expire=30,
        socket_connect_timeout=10,
        socket_keepalive=True,
    )
    # The seed's five priority channels are five queues; a node serves some with -Q.
    # Workers also serve Celery's default queue, where a plain client's send_task lands.
    # On RabbitMQ the queues are quorum queues (replicated, and a dead consumer's
    # messages return at once); Celery then uses native delayed delivery for countdowns.
    queue_args = {"x-queue-type": "quorum"} if amqp else None
    names = (*CHANNEL_QUEUES.values(), CELERY_DEFAULT_QUEUE)
    queues = [Queue(name, queue_arguments=queue_args) for name in names]  # type: ignore[no-untyped-call]
    conf: dict[str, Any] = {
        # Every periodic job: the framework's and the enabled plugins' (read by Celery beat).
        "beat_schedule": build_beat_schedule(settings, plugins),
        "broker_url": broker_url,
        "result_backend": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        # A result backend hiccup (Redis restarting) is retried, a bounded number of times.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 20,
        "broker_transport_options": {} if amqp else redis_broker,
        "result_backend_transport_options": dict(transport),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_time_limit": env.task_time_limit_s,
        "task_soft_time_limit": max(5, env.task_time_limit_s - 30),
        "result_expires": env.result_expires_s,
        # A result holds the task's return value and state only: no name, arguments
        # (member ids, amounts, single-use grants) or worker at rest in Redis; nothing
        # in CoreC reads them.
        "result_extended": False,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "task_queues": queues,
        "task_default_queue": CHANNEL_QUEUES[1],
        # Block chunks are routed per call to their channel's queue; the rest by name here.
        "task_routes": {
            "corec.streams.*": {"queue": CHANNEL_QUEUES[4]},
            "corec.db.*": {"queue": CHANNEL_QUEUES[1]},
            "corec.blocks.*": {"queue": CHANNEL_QUEUES[4]},
            "corec.plugins.*": {"queue": CHANNEL_QUEUES[4]},
            # Each enabled plugin's ("routes" in its plugin.json).
            **task_routes(plugins),
        },
        "include": [*FRAMEWORK_TASKS, *task_modules(plugins)],
        # One beat acts at a time: a leader lock in Redis (corec_tasks/beat.py).
        "beat_scheduler": "corec_tasks.beat:LeaderScheduler",
        # Flower needs events.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "beat_schedule_filename": str(settings.data_dir / "celerybeat-schedule"),
    }
    if amqp:
        conf |= {
            "task_default_queue_type": "quorum",
            "task_create_missing_queue_type": "quorum",
            "worker_detect_quorum_queues": True,
        }
    return conf
