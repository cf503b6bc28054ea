"""The feeds plugin (seed 000's market_monitor, macro_sync, predictor_temporal).

Its Celery tasks live in ``tasks.py``; its options in ``config.py``.
"""

from plugins.feeds.config import FeedsConfig

PLUGIN_NAME = "feeds"

__all__ = ["PLUGIN_NAME", "FeedsConfig"]
