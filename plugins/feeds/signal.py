"""The feeds' per-symbol signal work as a block of stream-fed entities.

Block ``feeds_signal`` (``corec_config.json``, the plugin's ``bloque``) is bound to
``market_data``: each run gets the candles that arrived since the last one, one per
entity. Processor ``market_signal`` gives each candle predictor_temporal's forecast for
its symbol (``model.py``: ridge AR over the last ``window`` closes up to and including
this candle: market_monitor's history before the run, then the run's candles), mapped
into the entity's value range: ``0.5 + 0.5 * tanh(predicted_return / SCALE)`` (0.5: no
expected move; above: up).

A candle that fails ``market_data``'s schema, or whose forecast is not finite, is an
error of its entity, so a feed gone bad shows in the block's error rate, fitness, audit
and alerts (the persister dead-letters schema failures once, as for any stream). A
symbol with too little history yet gets 0.5: no signal is not a fault.

Reads only (one pipelined LRANGE per run); publishing the ``predictions`` the trading
cycle reads stays with ``feeds.predict`` (tasks.py), once per tick.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np

from corec_tasks.blocks.processors import ProcessorContext
from corec_tasks.streams.schemas import PayloadError, validate_payload
from plugins.feeds.config import PredictorConfig
from plugins.feeds.history import History as PriceHistory
from plugins.feeds.history import floats
from plugins.feeds.model import predict
from plugins.trading.channels import MARKET_DATA, MarketData

PROCESSOR = "market_signal"
#: A forecast of this return maps to 0.5 + 0.5 * tanh(1) ~ 0.88.
SCALE = 0.01


#: ``history(symbols, count)``: at most ``count`` newest closes of each, oldest first.
History = Callable[[list[str], int], dict[str, list[float]]]


class MarketSignal:
    """Processor ``market_signal``. ``source()`` gives ``history`` (each symbol's recent
    closes, oldest first) and the predictor's options; called on each run, so a worker
    builds its feeds on first use, not at registration."""

    def __init__(self, source: Callable[[], tuple[History, PredictorConfig]]) -> None:
        self.source = source

    def __call__(self, ctx: ProcessorContext) -> tuple[np.ndarray, np.ndarray]:
        k = len(ctx)
        values = np.full(k, 0.5, np.float32)
        errors = np.zeros(k, np.bool_)
        candles: list[tuple[str, float] | None] = []
        for j in range(k):
            payload = ctx.payload_for(j)
            try:
                raw = json.dumps(payload, separators=(",", ":")).encode()
                tick = validate_payload(MARKET_DATA, raw, MarketData)
                candles.append((str(tick["symbol"]), float(tick["price"])))
            except (PayloadError, TypeError, ValueError):
                candles.append(None)
        history, cfg = self.source()
        # Enough closes for the window before the run plus the run's own candles.
        closes = history(sorted({c[0] for c in candles if c is not None}), cfg.window + k)
        series = _before_run(closes, candles)
        for j, candle in enumerate(candles):
            if candle is None:
                errors[j] = True
                continue
            symbol, price = candle
            seen = series.setdefault(symbol, [])
            seen.append(price)
            if len(seen) < cfg.lags + 3:
                continue  # too little history yet: no signal, not a fault
            window = np.asarray(seen[-cfg.window:], dtype=np.float64)
            ret, _ = predict(window, cfg.lags, cfg.alpha, cfg.horizon)
            if not math.isfinite(ret):
                errors[j] = True
                continue
            values[j] = 0.5 + 0.5 * math.tanh(ret / SCALE)
        return values, errors


def _before_run(
    closes: dict[str, list[float]], candles: list[tuple[str, float] | None]
) -> dict[str, list[float]]:
    """Each symbol's closes before this run's first candle of it. market_monitor appends
    every candle it publishes to the history, so the run's own candles are its newest
    closes: they are taken off, and each candle is then forecast from the closes up to
    itself. Closes from elsewhere (a foreign producer) are kept as they are."""
    mine: dict[str, list[float]] = {}
    for c in candles:
        if c is not None:
            mine.setdefault(c[0], []).append(c[1])
    out = {}
    for symbol, prices in closes.items():
        run = mine.get(symbol, [])
        tail = prices[-len(run):] if run and len(run) <= len(prices) else []
        out[symbol] = prices[: -len(run)] if run and tail == run else list(prices)
    return out


def redis_history(prices: PriceHistory) -> History:
    """``history`` over market_monitor's sealed lists (oldest first out; elements that
    fail their seal are skipped and reported: ``history.py``)."""

    def history(symbols: list[str], count: int) -> dict[str, list[float]]:
        if not symbols:
            return {}
        return {s: floats(c) for s, c in prices.read(symbols, count).items()}

    return history
