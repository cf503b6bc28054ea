"""Every periodic job of CoreC, in one place.

Intervals can be tuned from the environment; each entry expires if no worker
takes it in time, so a stopped cluster does not come back to a backlog of stale
runs. Every job is idempotent, so a second beat started by mistake doubles no effect.
"""

from celery.schedules import crontab

from corec_tasks.settings import get_settings

_persist_every = get_settings().env.persist_every_s

beat_schedule = {
    # Streams -> PostgreSQL `eventos`; consumer groups make concurrent runs safe.
    "persist-streams": {
        "task": "corec.streams.persist",
        "schedule": _persist_every,
        "options": {"expires": max(10.0, 4 * _persist_every)},
    },
    # Partition upkeep: the current month and the next ones, daily and idempotent.
    "partition-upkeep": {
        "task": "corec.db.partitions",
        "schedule": crontab(minute="7", hour="0"),
        "options": {"expires": 3600},
    },
}
