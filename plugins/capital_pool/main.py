"""The capital_pool plugin (seed 000). Its Celery tasks live in ``tasks.py``."""

from typing import Any

PLUGIN_NAME = "capital_pool"


def metrics_collectors(settings: Any, config: dict[str, Any]) -> list[Any]:
    """The exporter's hook: the pool's and its breakers' collectors (see metrics.py)."""
    from plugins.capital_pool.metrics import metrics_collectors as collectors

    return collectors(settings, config)


def register_processors(registry: Any) -> None:
    """Processor ``capital_intake`` (block ``capital_intake`` on ``capital_data``, intake.py)
    over this worker process's pool."""
    from plugins.capital_pool.intake import PROCESSOR, CapitalIntake
    from plugins.capital_pool.runtime import pool

    what = "contribute/withdraw from signed capital_data entries, answered on corec_responses"
    registry.register(PROCESSOR, CapitalIntake(pool), kind="vector", needs_payload=True,
                      description=what)
