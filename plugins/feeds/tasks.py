"""Celery tasks of the feeds plugin: ``celery -A corec_tasks call feeds.<name>``.

Each task takes an optional ``tick`` key; without it the key is the current interval
(``int(time / interval_s)``), so a redelivered task or a second beat in the same
interval publishes nothing twice. Each returns JSON: ``{"ok": true, "feed", "tick",
"published", "skipped"}``.

    celery -A corec_tasks call feeds.market_tick
    celery -A corec_tasks call feeds.predict --kwargs '{"tick": "manual-1"}'
"""

from __future__ import annotations

import time
from typing import Any

from corec_tasks.celery import app
from corec_tasks.runtime import runtime
from corec_tasks.settings import Settings
from plugins.feeds.config import FeedsConfig, config_from_settings
from plugins.feeds.macro import MacroSync
from plugins.feeds.market import MarketMonitor
from plugins.feeds.predictor import Predictor
from plugins.feeds.ticks import Ticker


class Feeds:
    """The three feeds of one process, on one Redis client."""

    def __init__(self, settings: Settings, config: FeedsConfig | None = None) -> None:
        self.config = config or config_from_settings(settings)
        self.ticker = Ticker(settings)
        self.market = MarketMonitor(self.ticker, self.config.market)
        self.macro = MacroSync(self.ticker, self.config.macro)
        self.predictor = Predictor(self.ticker, self.config.predictor, self.config.market.symbols)

    def tick_key(self, tick: str | int | None = None) -> str:
        """``tick`` as given, else the current interval's number."""
        return str(tick) if tick is not None else str(int(time.time() // self.config.interval_s))

    def close(self) -> None:
        """Close the Redis client."""
        self.ticker.close()


def feeds() -> Feeds:
    """This worker process's feeds (built on first use)."""
    return runtime().service("feeds.feeds", lambda rt: Feeds(rt.settings))


@app.task(name="feeds.market_tick")
def market_tick(tick: str | None = None) -> dict[str, Any]:
    """market_monitor: publish one ``market_data`` candle per configured symbol."""
    f = feeds()
    return f.market.tick(f.tick_key(tick)).as_dict()


@app.task(name="feeds.macro_tick")
def macro_tick(tick: str | None = None) -> dict[str, Any]:
    """macro_sync: publish one ``macro_data`` entry (VIX, S&P 500)."""
    f = feeds()
    return f.macro.tick(f.tick_key(tick)).as_dict()


@app.task(name="feeds.predict")
def predict(tick: str | None = None) -> dict[str, Any]:
    """predictor_temporal: publish a return forecast per symbol on ``predictions``."""
    f = feeds()
    return f.predictor.tick(f.tick_key(tick))
