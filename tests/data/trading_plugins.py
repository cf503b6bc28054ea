"""Plugins written only for the tests, outside plugins/: the pipeline config names them
by dotted path (``"tests.data.trading_plugins:FlipFlop"``) and the registry loads them."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from corec_tasks.contracts import PortfolioContract, StrategyContract


class FlipParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Share of the allocation an open uses.
    fraction: Decimal = Decimal("0.5")
    #: The symbol whose asset makes ``process`` raise ("" = none).
    explode_on: str = ""


class FlipFlop(StrategyContract):
    """Opens a long with ``fraction`` of its allocation when flat, closes when held;
    raises for the asset of ``explode_on``."""

    plugin_name = "flip_flop"
    Params: ClassVar[type[BaseModel] | None] = FlipParams

    def process(self, asset: Any, market_data: Any, predictions: Any) -> dict[str, Any]:
        p = self.params
        assert isinstance(p, FlipParams)
        if p.explode_on and market_data.get("symbol") == p.explode_on:
            raise RuntimeError(f"flip_flop cannot trade {p.explode_on}")
        price = Decimal(market_data["price"])
        held = asset.get("position")
        if held:
            side = "sell" if held["side"] == "long" else "buy"
            return {"action": "close", "reason": "flip",
                    "parameters": {"order_type": "market", "side": side, "price": price,
                                   "quantity": held["quantity"]}}  # fmt: skip
        budget = Decimal(asset["allocation"]) * p.fraction
        quantity = (budget / price).quantize(Decimal("0.0001"), rounding=ROUND_DOWN)
        if quantity <= 0:
            return {"action": "none", "parameters": {}, "reason": "no budget"}
        return {"action": "open", "reason": "flop",
                "parameters": {"order_type": "market", "side": "buy", "price": price,
                               "quantity": quantity}}  # fmt: skip


class BrokenPortfolio(PortfolioContract):
    """A portfolio plugin whose allocation always fails."""

    plugin_name = "broken_portfolio"

    def allocate_capital(self, portfolio: Any, assets: Any) -> dict[str, Any]:
        raise ZeroDivisionError("broken_portfolio divides by zero")


class OldStrategy(FlipFlop):
    """Written for a contract major this CoreC does not have."""

    CONTRACT_VERSION = "0.3"
