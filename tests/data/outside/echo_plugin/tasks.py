"""echo_plugin's Celery task, scheduled by its beat entry ``echo-tick``: counts its runs."""

from corec_tasks.celery import app
from corec_tasks.redis_conn import redis_client
from corec_tasks.runtime import get_settings


@app.task(name="echo_plugin.tick")
def tick() -> int:
    settings = get_settings()
    client = redis_client(settings)
    try:
        return int(client.incr(settings.key("echo_plugin:ticks")))
    finally:
        client.close()
