"""``PredictionThresholdStrategy``: the strategy contract (seed 003 §4) over ``rules``.

``process(asset, market_data, predictions)`` reads:

- ``predictions``: the expected return, a number or ``{"expected_return": ...}``;
- ``market_data``: ``price`` (required), ``atr`` (for ATR stops), ``vix``;
- ``asset``: ``allocation`` (capital allocated to this asset), ``equity`` (the pool's
  equity), ``position`` (``{"side": "long"|"short", "quantity": ...}`` or absent) and,
  optionally, ``risk_per_trade`` (passed in; otherwise the ``risk_per_trade`` option,
  otherwise capital_pool's phase + VIX rule on ``equity`` and ``vix``).

It returns the seed's action dict, money and quantities as ``Decimal``::

    {"action": "open" | "close" | "none",
     "parameters": {"order_type", "side", "quantity", "price", "stop_loss", "take_profit"},
     "reason": "..."}

``price`` is the reference price (the limit price for a limit order). Closes are market
orders for the whole position. ``parameters`` is empty when the action is ``none``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from corec_tasks.contracts import StrategyContract
from corec_tasks.plugin_base import ConfigLoader
from plugins.capital_pool.accounting import risk_per_trade
from plugins.capital_pool.config import CapitalRules, MacroRules
from plugins.strategy.rules import (
    CTX,
    ZERO,
    Position,
    StrategyInputError,
    position_size,
    signal,
    stop_loss,
    take_profit,
    to_decimal,
)

Positive = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
Ratio = Annotated[Decimal, Field(gt=0, lt=1, allow_inf_nan=False)]


class ThresholdParams(BaseModel):
    """Options of the prediction-threshold strategy. Returns and ratios are fractions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Open when the predicted return is beyond ±this.
    prediction_threshold: Positive = Decimal("0.005")
    #: Close an open position when the prediction falls to within ±this (or reverses).
    exit_band: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] = Decimal("0.001")
    allow_short: bool = False
    order_type: Literal["market", "limit"] = "market"
    #: Stop distance: ``stop_pct`` × price, or ``atr_multiple`` × market_data's ``atr``.
    stop_mode: Literal["pct", "atr"] = "pct"
    stop_pct: Ratio = Decimal("0.02")
    atr_multiple: Positive = Decimal("2")
    #: Take profit at this multiple of the stop distance; 0 sets none.
    take_profit_ratio: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] = Decimal("2")
    #: Quantity is rounded down to a multiple of this; prices to ``price_step``.
    lot_step: Positive = Decimal("0.0001")
    price_step: Positive = Decimal("0.01")
    #: An order below this quantity is not sent (``none``).
    min_quantity: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] = Decimal(0)
    #: A fixed risk per trade (fraction of equity); unset = capital_pool's phase + VIX rule.
    risk_per_trade: Annotated[Decimal, Field(gt=0, le=1, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _band_inside_threshold(self) -> ThresholdParams:
        if self.exit_band >= self.prediction_threshold:
            raise ValueError("exit_band must be below prediction_threshold")
        return self


def _none(reason: str) -> dict[str, Any]:
    return {"action": "none", "parameters": {}, "reason": reason}


class PredictionThresholdStrategy(StrategyContract):
    """Opens beyond a predicted-return threshold, closes on reversal or in the exit band,
    sizes by fixed-fractional risk capped by the allocation."""

    plugin_name = "prediction_threshold"
    Params: ClassVar[type[BaseModel] | None] = ThresholdParams
    plugin_debug_vars: ClassVar[list[str]] = [
        "prediction_threshold",
        "exit_band",
        "allow_short",
        "stop_mode",
        "risk_per_trade",
    ]

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        loader: ConfigLoader | None = None,
        portfolio_id: int | None = None,
        asset_id: int | None = None,
        settings: Any = None,
        capital_rules: CapitalRules | None = None,
        macro_rules: MacroRules | None = None,
    ) -> None:
        super().__init__(
            config, loader=loader, portfolio_id=portfolio_id, asset_id=asset_id, settings=settings
        )
        if not isinstance(self.params, ThresholdParams):  # a subclass swapped Params
            raise TypeError(f"{type(self).__name__}.Params must be ThresholdParams")
        self.p: ThresholdParams = self.params
        if settings is not None and (capital_rules is None or macro_rules is None):
            # In a deployment, the pool's own phase and VIX rules size the trades.
            pool_capital, pool_macro = _pool_rules(settings)
            capital_rules = capital_rules or pool_capital
            macro_rules = macro_rules or pool_macro
        self.capital_rules = capital_rules or CapitalRules()
        self.macro_rules = macro_rules or MacroRules()

    def risk(self, asset: Mapping[str, Any], equity: Decimal, vix: Decimal | None) -> Decimal:
        """Risk per trade: passed in, else configured, else the pool's phase + VIX rule."""
        if asset.get("risk_per_trade") is not None:
            return to_decimal(asset["risk_per_trade"], "asset.risk_per_trade", allow_float=True)
        if self.p.risk_per_trade is not None:
            return self.p.risk_per_trade
        _phase, risk = risk_per_trade(equity, vix, self.capital_rules, self.macro_rules)
        return risk

    def process(
        self, asset: Mapping[str, Any], market_data: Mapping[str, Any], predictions: Any
    ) -> dict[str, Any]:
        """The seed's action dict for one asset (see the module docstring)."""
        raw = (
            predictions.get("expected_return") if isinstance(predictions, Mapping) else predictions
        )
        prediction = to_decimal(raw, "predictions.expected_return", allow_float=True)
        price = to_decimal(market_data.get("price"), "market_data.price")
        if price <= 0:
            raise StrategyInputError(f"market_data.price must be positive, got {price}")
        position = _position(asset.get("position"))
        action, side, reason = signal(
            prediction, position, self.p.prediction_threshold, self.p.exit_band, self.p.allow_short
        )
        if action == "none" or side is None:
            return _none(reason)
        if action == "close":
            assert position is not None
            return {
                "action": "close",
                "parameters": {
                    "order_type": "market",
                    "side": "sell" if side == "long" else "buy",
                    "quantity": position.quantity,
                    "price": price,
                    "stop_loss": None,
                    "take_profit": None,
                },
                "reason": reason,
            }
        return self._open(side, price, asset, market_data, reason)

    def _open(
        self,
        side: Literal["long", "short"],
        price: Decimal,
        asset: Mapping[str, Any],
        market_data: Mapping[str, Any],
        reason: str,
    ) -> dict[str, Any]:
        equity = to_decimal(asset.get("equity"), "asset.equity")
        allocation = to_decimal(asset.get("allocation"), "asset.allocation")
        vix = market_data.get("vix")
        risk = self.risk(
            asset,
            equity,
            None if vix is None else to_decimal(vix, "market_data.vix", allow_float=True),
        )
        if self.p.stop_mode == "atr":
            atr = to_decimal(market_data.get("atr"), "market_data.atr")
            distance = CTX.multiply(atr, self.p.atr_multiple)
        else:
            distance = CTX.multiply(price, self.p.stop_pct)
        stop = stop_loss(price, distance, side, self.p.price_step)
        quantity = position_size(equity, risk, price, stop, allocation, self.p.lot_step)
        if quantity <= ZERO or quantity < self.p.min_quantity:
            return _none(
                f"{reason}, but quantity {quantity} is below the minimum "
                f"(risk {risk}, allocation {allocation})"
            )
        return {
            "action": "open",
            "parameters": {
                "order_type": self.p.order_type,
                "side": "buy" if side == "long" else "sell",
                "quantity": quantity,
                "price": price,
                "stop_loss": stop,
                "take_profit": take_profit(
                    price, stop, self.p.take_profit_ratio, side, self.p.price_step
                ),
            },
            "reason": f"{reason}; risk {risk} of equity {equity}",
        }


def _pool_rules(settings: Any) -> tuple[CapitalRules, MacroRules]:
    """The capital pool's rules of this deployment (its config file, parsed once per
    version of the file: the cycle builds a strategy per asset)."""
    from plugins.capital_pool.config import DEFAULT_PATH

    path = Path(settings.plugin_config_file("capital_pool") or DEFAULT_PATH)
    return _rules_of(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=16)
def _rules_of(path: str, _mtime_ns: int) -> tuple[CapitalRules, MacroRules]:
    from plugins.capital_pool.config import load_config

    cap = load_config(Path(path))
    return cap.capital_config, cap.macro_config


def _position(raw: Any) -> Position | None:
    if raw is None:
        return None
    if isinstance(raw, Position):
        return raw if raw.quantity > 0 else None
    if not isinstance(raw, Mapping):
        raise StrategyInputError("asset.position must be a mapping {side, quantity} or absent")
    quantity = to_decimal(raw.get("quantity"), "asset.position.quantity")
    if quantity == 0:
        return None
    side = raw.get("side")
    if side not in ("long", "short") or quantity < 0:
        raise StrategyInputError(
            f"asset.position needs side 'long' or 'short' and a positive quantity, got {dict(raw)}"
        )
    return Position(side, quantity)


__all__ = ["PredictionThresholdStrategy", "ThresholdParams"]
