"""feeds' part of ``corec demo``: entries on its channels for the streams section.

``corec demo`` publishes them beside the framework's own (``corec_alerts``), waits for
the persister to land them in ``eventos``, and shows the malformed ones in
``corec_dead_letter`` with the reason its schemas (``plugins.trading.channels``) give.
"""

from __future__ import annotations

import random
from typing import Any

Entry = tuple[str, dict[str, Any]]

#: Refused by ``MarketData`` (a negative price) and ``MacroData`` (no ``vix_price``).
MALFORMED: list[Entry] = [
    ("market_data", {"symbol": "BTCUSDT", "price": -5}),
    ("macro_data", {"sp500_price": 4500.0}),
]


def demo_events(n: int, rng: random.Random) -> tuple[list[Entry], list[Entry]]:
    """``n`` ticks, three market_data (a random walk per symbol) to one macro_data; and
    the malformed entries above."""
    price = {"BTCUSDT": 35_000.0, "ETHUSDT": 2_000.0, "SPY": 450.0}
    out: list[Entry] = []
    for i in range(n):
        if i % 4 < 3:
            sym = rng.choice(list(price))
            price[sym] *= 1 + rng.gauss(0, 0.001)
            tick = {"symbol": sym, "price": round(price[sym], 2), "volume": 1.5}
            out.append(("market_data", tick))
        else:
            macro = {"vix_price": round(rng.uniform(12, 30), 2), "sp500_price": 4500.0}
            out.append(("macro_data", macro))
    return out, list(MALFORMED)
