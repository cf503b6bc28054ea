"""The feeds plugin (seed 000's market_monitor, macro_sync, predictor_temporal).

Its Celery tasks live in ``tasks.py``; its options in ``config.py``.
"""

from typing import Any

from plugins.feeds.config import FeedsConfig

PLUGIN_NAME = "feeds"

__all__ = ["PLUGIN_NAME", "FeedsConfig"]


def register_processors(registry: Any) -> None:
    """Processor ``market_signal`` (block ``feeds_signal`` on ``market_data``, signal.py)
    over this worker process's feeds: their Redis client and predictor options."""
    from plugins.feeds.signal import PROCESSOR, MarketSignal

    what = "predictor_temporal's forecast per market_data candle"
    registry.register(PROCESSOR, MarketSignal(_process_source), kind="vector",
                      needs_payload=True, description=what)


def _process_source() -> tuple[Any, Any]:
    from plugins.feeds.signal import redis_history
    from plugins.feeds.tasks import feeds

    f = feeds()
    cfg = f.config.predictor
    return redis_history(f.market.history), cfg
