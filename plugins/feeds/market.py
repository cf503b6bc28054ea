"""market_monitor: one ``market_data`` entry per configured symbol and tick.

Source ``gbm`` (default): geometric Brownian motion, all symbols in one numpy step
(see ``sim.py``); the last close of each symbol and the step counter live in Redis,
so any worker continues the path. Source ``csv``: each symbol replays its OHLC file,
one row per tick, from a cursor in Redis.

Every tick also pushes each close onto ``feeds:history:<symbol>`` (newest first,
``history`` long, each element sealed: ``history.py``), which predictor_temporal, the
strategy and the paper broker read.

The state a tick continues from is sealed too (``plugins.trading.sealed``): each
symbol's last close in ``feeds:market:close`` and the step in ``feeds:market:step``
(GBM), each symbol's row in ``feeds:market:cursor`` (CSV). A value that fails its seal
is reported and not used: a close falls back to the symbol's newest authenticated
history price, else its initial price; the step and a cursor to 0.

Payload (validates as ``MarketData``)::

    {"symbol": "BTCUSDT", "price": 35012.5, "volume": 9.7, "timestamp": 1763900000.1,
     "ohlc": {"open": ..., "high": ..., "low": ..., "close": ...},
     "source": "gbm", "tick": "29398333"}         # csv adds "date" and "line"
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plugins.feeds import sim
from plugins.feeds.config import MarketConfig
from plugins.feeds.history import History, history_key
from plugins.feeds.replay import Row, row_at, rows_of
from plugins.feeds.ticks import Ticker
from plugins.trading.channels import MARKET_DATA, MarketData

FEED = "market"


@dataclass
class TickResult:
    """What one tick did: ``skipped`` if its key was already done."""

    feed: str
    tick: str
    published: int = 0
    skipped: bool = False
    ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON a task returns."""
        return {"ok": True, "feed": self.feed, "tick": self.tick,
                "published": self.published, "skipped": self.skipped}  # fmt: skip


__all__ = ["MarketMonitor", "TickResult", "candle_payload", "history_key"]
FAMILY = "feeds:market"


def candle_payload(
    symbol: str, o: float, h: float, lo: float, c: float, v: float, **extra: Any
) -> dict[str, Any]:
    """A ``market_data`` payload from one candle (validated; ValueError if not)."""
    payload = {
        "symbol": symbol,
        "price": c,
        "volume": v,
        "timestamp": time.time(),
        "ohlc": {"open": o, "high": h, "low": lo, "close": c},
        **extra,
    }
    MarketData.model_validate(payload)
    return payload


class MarketMonitor:
    """Publishes ``market_data`` for ``config.symbols``, one tick per call of ``tick``."""

    def __init__(self, ticker: Ticker, config: MarketConfig) -> None:
        self.t = ticker
        self.cfg = config
        self.history = History(ticker)
        self.seals = self.history.seals
        if config.source == "csv":
            for symbol in config.symbols:  # a bad file fails here, naming its line
                rows_of(config.csv_files[symbol])

    def tick(self, key: str) -> TickResult:
        """Run tick ``key`` once: publish every symbol's candle and store the state."""
        with self.t.exclusive(FEED):
            if self.t.done(FEED, key):
                return TickResult(FEED, key, skipped=True)
            if self.cfg.source == "csv":
                payloads, updates = self._csv(key)
            else:
                payloads, updates = self._gbm(key)
            history = [(p["symbol"], p["price"], p["timestamp"]) for p in payloads]

            def queue(pipe: Any) -> None:
                updates(pipe)
                for symbol, close, at in history:
                    self.history.push(pipe, symbol, close, at, key, self.cfg.history)

            ids = self.t.commit(FEED, key, MARKET_DATA, payloads, queue)
        return TickResult(FEED, key, len(ids), ids=ids)

    def _gbm(self, key: str) -> tuple[list[dict[str, Any]], Any]:
        cfg = self.cfg
        closes_key, step_key = self.t.key("market", "close"), self.t.key("market", "step")
        prices = np.array(self._last_closes(closes_key))
        step = int(self.seals.open(FAMILY, step_key, self.t.r.get(step_key)) or 0)
        c = sim.market_tick(prices, cfg.seed, step, cfg.mu, cfg.sigma, cfg.dt, cfg.substeps,
                            cfg.volume)  # fmt: skip
        payloads = [
            candle_payload(s, *vals, source="gbm", tick=key)
            for s, *vals in zip(cfg.symbols, c.open.tolist(), c.high.tolist(), c.low.tolist(),
                                c.close.tolist(), c.volume.tolist(), strict=True)
        ]  # fmt: skip
        closes = {s: self.seals.seal(f"{closes_key}\n{s}", repr(x).encode())
                  for s, x in zip(cfg.symbols, c.close.tolist(), strict=True)}  # fmt: skip

        def updates(pipe: Any) -> None:
            pipe.hset(closes_key, mapping=closes)
            pipe.set(step_key, self.seals.seal(step_key, b"%d" % (step + 1)))

        return payloads, updates

    def _last_closes(self, closes_key: str) -> list[float]:
        """Each symbol's sealed last close; else its newest authenticated history
        price; else its initial price."""
        cfg = self.cfg
        stored = self.t.r.hmget(closes_key, list(cfg.symbols))
        out: list[float] = []
        missing = []
        for symbol, raw in zip(cfg.symbols, stored, strict=True):
            body = self.seals.open(FAMILY, f"{closes_key}\n{symbol}", raw)
            out.append(float(body) if body is not None else float("nan"))
            if body is None:
                missing.append(symbol)
        if missing:
            newest = self.history.read(missing, 16)
            for i, symbol in enumerate(cfg.symbols):
                if symbol in newest:
                    got = newest[symbol]
                    out[i] = float(got[0].price) if got else \
                        cfg.initial_prices.get(symbol, cfg.default_price)  # fmt: skip
        return out

    def _csv(self, key: str) -> tuple[list[dict[str, Any]], Any]:
        cfg = self.cfg
        cursor_key = self.t.key("market", "cursor")
        cursors = self.t.r.hmget(cursor_key, list(cfg.symbols))
        payloads, advanced = [], {}
        for symbol, raw in zip(cfg.symbols, cursors, strict=True):
            at = int(self.seals.open(FAMILY, f"{cursor_key}\n{symbol}", raw) or 0)
            row: Row | None = row_at(rows_of(cfg.csv_files[symbol]), at, cfg.loop)
            if row is None:
                continue  # past the end of a file that does not loop
            payloads.append(candle_payload(symbol, row.open, row.high, row.low, row.close,
                                           row.volume, source="csv", tick=key, date=row.date,
                                           line=row.line))  # fmt: skip
            advanced[symbol] = self.seals.seal(f"{cursor_key}\n{symbol}", b"%d" % (at + 1))

        def updates(pipe: Any) -> None:
            if advanced:
                pipe.hset(cursor_key, mapping=advanced)

        return payloads, updates
