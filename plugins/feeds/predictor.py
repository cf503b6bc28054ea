"""predictor_temporal: a return forecast per symbol on the ``predictions`` stream.

Reads the last ``window`` closes of each symbol, either from the history market_monitor
keeps in Redis (``source: history``, one LRANGE per symbol, pipelined, only the
elements CoreC sealed: ``history.py``) or from the
``market_data`` stream itself (``source: stream``: XREVRANGE over at most ``scan``
entries, so closes from any producer count; malformed entries are skipped). Fits the
model of ``model.py`` and publishes, per symbol with enough data::

    {"symbol": "BTCUSDT", "predicted_return": 0.0012, "horizon": 1,
     "model": "ridge_ar(2)", "timestamp": 1763900000.1, "observations": 61, "tick": "..."}

Symbols with fewer than ``lags + 3`` closes are skipped (listed in the result).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from plugins.feeds.config import PredictorConfig
from plugins.feeds.history import History, floats
from plugins.feeds.market import TickResult
from plugins.feeds.model import MODEL, predict
from plugins.feeds.ticks import Ticker
from plugins.trading.channels import MARKET_DATA, PREDICTIONS, MarketData

FEED = "predict"


class Prediction(BaseModel):
    """A ``predictions`` payload (checked before it is published)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    symbol: str = Field(min_length=1)
    predicted_return: float = Field(gt=-1, allow_inf_nan=False)
    horizon: int = Field(ge=1)
    model: str = Field(min_length=1)
    timestamp: float = Field(gt=0)


class Predictor:
    """Publishes ``predictions`` for ``symbols``, once per tick key."""

    def __init__(self, ticker: Ticker, config: PredictorConfig, symbols: Sequence[str]) -> None:
        self.t = ticker
        self.cfg = config
        self.symbols = tuple(symbols)
        self.history = History(ticker)

    def closes(self) -> dict[str, list[float]]:
        """The recent closes of each symbol, oldest first (at most ``window``)."""
        if self.cfg.source == "stream":
            return self._from_stream()
        got = self.history.read(self.symbols, self.cfg.window)
        return {s: floats(closes) for s, closes in got.items()}

    def _from_stream(self) -> dict[str, list[float]]:
        want, window = set(self.symbols), self.cfg.window
        out: dict[str, list[float]] = {s: [] for s in self.symbols}
        full = 0
        rows: Any = self.t.r.xrevrange(self.t.bus.key(MARKET_DATA), count=self.cfg.scan)
        for _, fields in rows:
            try:
                tick = MarketData.model_validate_json(fields.get(b"d", b""))
            except ValueError:
                continue  # not ours to judge here: the persister dead-letters it
            got = out.get(tick.symbol) if tick.symbol in want else None
            if got is None or len(got) >= window:
                continue
            got.append(tick.price)
            full += len(got) == window
            if full == len(want):
                break
        return {s: v[::-1] for s, v in out.items()}

    def tick(self, key: str) -> dict[str, Any]:
        """Forecast every symbol with enough closes and publish, once per ``key``."""
        cfg = self.cfg
        with self.t.exclusive(FEED):
            if self.t.done(FEED, key):
                return TickResult(FEED, key, skipped=True).as_dict()
            payloads, short = [], []
            now = time.time()
            for symbol, closes in self.closes().items():
                if len(closes) < cfg.lags + 3:
                    short.append(symbol)
                    continue
                ret, n = predict(np.asarray(closes), cfg.lags, cfg.alpha, cfg.horizon)
                if not math.isfinite(ret):
                    short.append(symbol)
                    continue
                payload = {"symbol": symbol, "predicted_return": ret, "horizon": cfg.horizon,
                           "model": f"{MODEL}({cfg.lags})", "timestamp": now,
                           "observations": n, "tick": key}  # fmt: skip
                Prediction.model_validate(payload)
                payloads.append(payload)
            ids = self.t.commit(FEED, key, PREDICTIONS, payloads)
        result = TickResult(FEED, key, len(ids), ids=ids).as_dict()
        result["skipped_symbols"] = short
        return result


def parse_prediction(raw: bytes) -> dict[str, Any]:
    """A ``predictions`` entry's payload, checked (for consumers and tests)."""
    data: dict[str, Any] = json.loads(raw)
    Prediction.model_validate(data)
    return data
