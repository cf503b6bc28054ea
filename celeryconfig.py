"""Celery settings, read from CoreC's typed settings object (never the reverse).

At-least-once delivery: tasks are acknowledged after they run (late acks), are
requeued when a worker dies mid-task, long tasks are prefetched one at a time,
and the broker's visibility timeout is well above the longest task, so an
unacknowledged task is redelivered only when its worker is really gone. Every
task is idempotent, so a redelivery never applies twice.
"""

from kombu import Queue

from beat_schedule import beat_schedule  # noqa: F401  (read by Celery beat)
from corec_tasks.config import CHANNEL_QUEUES
from corec_tasks.nucleus import plugin_task_modules
from corec_tasks.settings import get_settings

_settings = get_settings()
_env = _settings.env

broker_url = _settings.redis_url
result_backend = _settings.redis_url
broker_connection_retry_on_startup = True

# Redelivery only after a task has surely died: twice its hard time limit, plus slack.
_visibility_timeout = _env.visibility_timeout_s or 2 * _env.task_time_limit_s + 300
_transport: dict[str, object] = {"visibility_timeout": _visibility_timeout}
if _settings.redis_prefix:
    _transport["global_keyprefix"] = _settings.redis_prefix
# Tasks of a worker that died are requeued by any live worker's sweep, every
# restore_interval_s (kombu's default throttle would make that 10x longer). A sweep
# takes milliseconds; a worker killed during one leaves its mutex behind, which
# would block every sweep for kombu's default 300 s, so it expires after 30 s.
broker_transport_options = dict(
    _transport,
    unacked_restore_interval=_env.restore_interval_s,
    unacked_restore_throttle=1,
    unacked_mutex_expire=30,
)
result_backend_transport_options = dict(_transport)

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_cancel_long_running_tasks_on_connection_loss = True
task_time_limit = _env.task_time_limit_s
task_soft_time_limit = max(5, _env.task_time_limit_s - 30)
result_expires = _env.result_expires_s
result_extended = True

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# The seed's five priority channels are five queues; a node serves some with -Q.
task_queues = [Queue(name) for name in CHANNEL_QUEUES.values()]
task_default_queue = CHANNEL_QUEUES[1]
# Block chunks are routed per call to their channel's queue; the rest by name here.
task_routes = {
    "corec.streams.*": {"queue": CHANNEL_QUEUES[4]},
    "corec.db.*": {"queue": CHANNEL_QUEUES[1]},
    "corec.blocks.*": {"queue": CHANNEL_QUEUES[4]},
    "capital_pool.*": {"queue": CHANNEL_QUEUES[1]},
}
# The framework's tasks, and each enabled plugin's ("tasks" in its plugin.json).
include = ["corec_tasks.tasks", "corec_tasks.block_tasks", *plugin_task_modules(_settings)]
# One beat acts at a time: a leader lock in Redis (corec_tasks/beat.py).
beat_scheduler = "corec_tasks.beat:LeaderScheduler"

# Flower needs events.
worker_send_task_events = True
task_send_sent_event = True
worker_hijack_root_logger = False
beat_schedule_filename = str(_settings.data_dir / "celerybeat-schedule")
