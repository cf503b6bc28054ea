"""The price history market_monitor keeps in Redis, sealed (``plugins.trading.sealed``).

``feeds:history:<symbol>`` is a list, newest first, ``history`` long. Each element is a
sealed JSON ``{"p": "<close>", "at": <epoch s>, "tick": "<tick key>"}``: the close as
the shortest decimal of the float the feed published, the time it was published and the
tick that published it. The paper broker fills at these prices, the strategy and the
portfolio plugin read them, so :meth:`History.read` returns only elements CoreC sealed
for that very list: a pushed forgery, or an element copied from another symbol's list,
is skipped (counted, alerted once). Elements are ordered by their signed time and a
copy of an older element pushed again is dropped as a duplicate, so a replay cannot
become the newest price; the trading path also refuses a newest price older than its
``max_price_age_s`` (what is left to someone who deletes the newest elements: a recent
real price).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from plugins.feeds.ticks import Ticker
from plugins.trading.sealed import Seals

FAMILY = "feeds:history"


@dataclass(frozen=True)
class Close:
    """One authenticated close."""

    price: Decimal
    at: float
    tick: str


def history_key(ticker: Ticker, symbol: str) -> str:
    """The Redis list of ``symbol``'s recent closes (newest first)."""
    return ticker.key("history", symbol)


class History:
    """Sealed writes and verified reads of every symbol's recent closes."""

    def __init__(self, ticker: Ticker) -> None:
        self.t = ticker
        self.seals = Seals(ticker.settings, ticker.r)

    def push(self, pipe: Any, symbol: str, close: float, at: float, tick: str, keep: int) -> None:
        """Queue ``close`` as the newest element of ``symbol``'s list (on ``pipe``)."""
        key = history_key(self.t, symbol)
        pipe.lpush(key, self.seals.seal_json(key, {"p": repr(close), "at": at, "tick": tick}))
        pipe.ltrim(key, 0, keep - 1)

    def read(self, symbols: Sequence[str], count: int) -> dict[str, list[Close]]:
        """At most ``count`` authenticated closes per symbol, newest first."""
        pipe = self.t.r.pipeline(transaction=False)
        for symbol in symbols:
            pipe.lrange(history_key(self.t, symbol), 0, count - 1)
        return {s: self._verified(history_key(self.t, s), raw)
                for s, raw in zip(symbols, pipe.execute(), strict=True)}  # fmt: skip

    def latest(self, symbol: str) -> Close | None:
        """The newest authenticated close of ``symbol`` (of its newest few elements)."""
        got = self.read([symbol], 16)[symbol]
        return got[0] if got else None

    def _verified(self, key: str, raw: list[bytes]) -> list[Close]:
        out: dict[bytes, Close] = {}
        for element in raw:
            body = self.seals.open(FAMILY, key, element)
            if body is None or body in out:
                continue  # a forgery (reported), or a replayed copy
            try:
                d = json.loads(body)
                out[body] = Close(Decimal(d["p"]), float(d["at"]), str(d["tick"]))
            except (ValueError, KeyError, TypeError, ArithmeticError):
                self.seals.reject(FAMILY, key, "a sealed element that is not a close")
        return sorted(out.values(), key=lambda c: c.at, reverse=True)


def floats(closes: list[Close]) -> list[float]:
    """Newest-first closes as floats, oldest first (what the models read)."""
    return [float(c.price) for c in reversed(closes)]
