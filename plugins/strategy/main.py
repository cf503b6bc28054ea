"""The strategy plugin's entry point (the seed's strategy plugin type).

The decision rules are in ``plugins.strategy.rules``, the plugin class in
``plugins.strategy.plugin``; the nucleus loads this file by path, so it holds no
relative imports.
"""

from plugins.strategy.plugin import PredictionThresholdStrategy

PLUGIN_NAME = "strategy"

__all__ = ["PLUGIN_NAME", "PredictionThresholdStrategy"]
