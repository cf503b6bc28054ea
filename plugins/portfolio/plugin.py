"""The portfolio plugin on the Portfolio contract (seed 003 §6): capital per asset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from corec_tasks.contracts import PortfolioContract
from plugins.portfolio.allocation import (
    allocate_capital,
    cap_weights,
    equal_weight,
    needs_rebalance,
    risk_parity,
)


class PortfolioParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allocation_method: Literal["equal_weight", "risk_parity"] = "equal_weight"
    #: Largest share of the portfolio's capital for one asset; the excess is shared.
    max_allocation_per_asset: Annotated[float, Field(gt=0, le=1)] = 0.25
    #: Weights are recomputed only when one drifts further than this from its target.
    rebalance_threshold: Annotated[float, Field(ge=0, le=1)] = 0.05
    #: Returns used for the covariance of risk_parity (at least 3 per asset).
    min_returns: int = Field(20, ge=3)


class AllocatorPortfolio(PortfolioContract):
    """``allocate_capital(portfolio, assets)``: capital per asset id, never more than the
    portfolio's ``capital`` (the part of the pool the capital pool lets trade)."""

    plugin_name = "allocator"
    Params: ClassVar[type[BaseModel] | None] = PortfolioParams
    plugin_debug_vars: ClassVar[list[str]] = ["allocation_method", "max_allocation_per_asset"]

    def weights(self, assets: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Target weights: equal, or equal risk contribution from the assets' ``returns``
        (falls back to equal weight until every asset has ``min_returns`` of them)."""
        p = self.params
        assert isinstance(p, PortfolioParams)
        n = len(assets)
        w = equal_weight(n)
        if p.allocation_method == "risk_parity" and n > 1:
            series = [list(a.get("returns") or []) for a in assets]
            depth = min(len(s) for s in series)
            if depth >= p.min_returns:
                cov = np.cov(np.array([s[-depth:] for s in series]))
                w = risk_parity(cov)
        return cap_weights(w, p.max_allocation_per_asset)

    def allocate_capital(self, portfolio: Any, assets: Any) -> dict[str, Any]:
        """``{asset_id: Decimal}`` for ``portfolio = {"capital": Decimal}`` and assets
        ``[{"id", "returns"?, "weight"?}]``, ``weight`` being a held asset's current one
        (absent or None: not held).

        Rebalancing: while no held asset drifts from its target by more than
        ``rebalance_threshold``, held assets keep their current weights (no rebalance)
        and the others share what is left, at most their targets; beyond it, every
        asset gets its target."""
        if not assets:
            return {}
        capital = portfolio["capital"] if isinstance(portfolio, Mapping) else portfolio.capital
        target = self.weights(assets)
        p = self.params
        assert isinstance(p, PortfolioParams)
        held = np.array([a.get("weight") is not None for a in assets])
        weights = target
        if held.any():
            current = np.array([float(a.get("weight") or 0) for a in assets])
            if current[held].sum() <= 1 + 1e-9 and not needs_rebalance(
                current[held], target[held], p.rebalance_threshold
            ):
                weights = np.where(held, current, target)
                room = max(0.0, 1.0 - float(current[held].sum()))
                others = float(weights[~held].sum())
                if others > room:
                    weights = np.where(held, weights, weights * (room / others))
        amounts = allocate_capital(Decimal(capital), weights)
        return {str(a["id"]): amount for a, amount in zip(assets, amounts, strict=True)}
