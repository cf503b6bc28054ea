"""The pipeline plugin: ``trading.cycle`` (beat) fans ``trading.process_assets`` tasks."""

from typing import Any

PLUGIN_NAME = "pipeline"


def metrics_collectors(settings: Any, config: dict[str, Any]) -> list[Any]:
    """The exporter's hook: orders and fills (see metrics.py)."""
    from plugins.pipeline.metrics import metrics_collectors as collectors

    return collectors(settings, config)
