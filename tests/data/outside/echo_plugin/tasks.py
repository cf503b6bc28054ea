"""echo_plugin's Celery task, scheduled by its beat entry ``echo-tick``."""

from corec_tasks.celery import app


@app.task(name="echo_plugin.tick")
def tick() -> str:
    return "echo"
