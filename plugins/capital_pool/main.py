"""The capital_pool plugin (seed 000). Its Celery tasks live in ``tasks.py``."""

from typing import Any

PLUGIN_NAME = "capital_pool"


def metrics_collectors(settings: Any, config: dict[str, Any]) -> list[Any]:
    """The exporter's hook: the pool's and its breakers' collectors (see metrics.py)."""
    from plugins.capital_pool.metrics import metrics_collectors as collectors

    return collectors(settings, config)
