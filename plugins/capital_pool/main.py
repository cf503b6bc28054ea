"""The capital_pool plugin (seed 000). Its Celery tasks live in ``tasks.py``."""

PLUGIN_NAME = "capital_pool"
