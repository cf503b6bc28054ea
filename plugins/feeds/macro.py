"""macro_sync: one ``macro_data`` entry (``vix_price``, ``sp500_price``) per tick.

Source ``gbm`` (default): the S&P 500 follows geometric Brownian motion and the VIX a
mean-reverting Ornstein-Uhlenbeck process with a floor, their shocks correlated
(``rho``, negative by default: stocks fall, volatility rises); see ``sim.py``.
Source ``csv``: the closes of two OHLC files, one row per tick, from a cursor in Redis.
The levels, step and cursor live in ``feeds:macro:sealed``: one JSON object, sealed
(``plugins.trading.sealed``), since the next VIX is computed from them and the VIX sizes
every trade's risk. A state that fails its seal is reported and not used: the feed
starts again from its configured levels (or the CSV's first row).

Payload (validates as ``MacroData``)::

    {"vix_price": 18.4, "sp500_price": 4503.2, "timestamp": 1763900000.1,
     "source": "gbm", "tick": "29398333"}          # csv adds "date"
"""

from __future__ import annotations

import time
from typing import Any

from plugins.feeds import sim
from plugins.feeds.config import MacroConfig
from plugins.feeds.market import TickResult
from plugins.feeds.replay import row_at, rows_of
from plugins.feeds.ticks import Ticker
from plugins.trading.channels import MACRO_DATA, MacroData
from plugins.trading.sealed import Seals

FEED = "macro"
FAMILY = "feeds:macro"


def macro_payload(vix: float, sp500: float, **extra: Any) -> dict[str, Any]:
    """A ``macro_data`` payload (validated; ValueError if not)."""
    payload = {"vix_price": vix, "sp500_price": sp500, "timestamp": time.time(), **extra}
    MacroData.model_validate(payload)
    return payload


class MacroSync:
    """Publishes ``macro_data``, one entry per call of ``tick``."""

    def __init__(self, ticker: Ticker, config: MacroConfig) -> None:
        self.t = ticker
        self.cfg = config
        self.seals = Seals(ticker.settings, ticker.r)
        if config.source == "csv":
            for path in (config.vix_csv, config.sp500_csv):  # both set: the config checks
                rows_of(path or "")  # a bad file fails here, naming its line

    def tick(self, key: str) -> TickResult:
        """Run tick ``key`` once: publish the levels and store the state."""
        cfg = self.cfg
        state_key = self.t.key("macro", "sealed")
        with self.t.exclusive(FEED):
            if self.t.done(FEED, key):
                return TickResult(FEED, key, skipped=True)
            opened = self.seals.open_json(FAMILY, state_key, self.t.r.get(state_key))
            raw: dict[str, Any] = opened if isinstance(opened, dict) else {}
            state: dict[str, Any]
            if cfg.source == "csv":
                assert cfg.vix_csv and cfg.sp500_csv
                at = int(raw.get("cursor", 0))
                vix_row = row_at(rows_of(cfg.vix_csv), at, cfg.loop)
                sp_row = row_at(rows_of(cfg.sp500_csv), at, cfg.loop)
                if vix_row is None or sp_row is None:
                    payloads: list[dict[str, Any]] = []
                    state = {}
                else:
                    payloads = [macro_payload(vix_row.close, sp_row.close, source="csv",
                                              tick=key, date=sp_row.date)]  # fmt: skip
                    state = {"cursor": at + 1}
            else:
                step = int(raw.get("step", 0))
                sp500, vix = sim.macro_tick(
                    float(raw.get("sp500", cfg.sp500_start)),
                    float(raw.get("vix", cfg.vix_start)),
                    cfg.seed, step,
                    sp500_mu=cfg.sp500_mu, sp500_sigma=cfg.sp500_sigma, vix_mean=cfg.vix_mean,
                    vix_theta=cfg.vix_theta, vix_sigma=cfg.vix_sigma, vix_floor=cfg.vix_floor,
                    rho=cfg.rho, dt=cfg.dt,
                )  # fmt: skip
                payloads = [macro_payload(vix, sp500, source="gbm", tick=key)]
                state = {"step": step + 1, "sp500": repr(sp500), "vix": repr(vix)}

            def queue(pipe: Any) -> None:
                if state:
                    pipe.set(state_key, self.seals.seal_json(state_key, {**raw, **state}))

            ids = self.t.commit(FEED, key, MACRO_DATA, payloads, queue)
        return TickResult(FEED, key, len(ids), ids=ids)
