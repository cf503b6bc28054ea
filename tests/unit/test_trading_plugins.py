"""Every built-in trading plugin loads by type and name and honours its contract."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from corec_tasks.contracts import check_contract, contract_for
from plugins.trading.db import create_schema, make_trading_engine, session_factory
from plugins.trading.registry import BUILTIN, load_plugin

#: What a built-in needs to be built outside a deployment.
EXTRA: dict[str, Any] = {
    "ccxt": {"environ": {"COREC_EXCHANGE_API_KEY": "k", "COREC_EXCHANGE_SECRET": "s"}},
}


@pytest.mark.parametrize(
    ("plugin_type", "name"), [(t, n) for t, names in BUILTIN.items() for n in names]
)
def test_builtin_plugins_load_and_honour_their_contract(
    plugin_type: str, name: str, tmp_path: Path
) -> None:
    extra = dict(EXTRA.get(name, {}))
    engine = make_trading_engine(f"sqlite:///{tmp_path / 't.db'}")
    create_schema(engine)
    if plugin_type == "aaa":
        extra["sessions"] = session_factory(engine)
    try:
        plugin = load_plugin(plugin_type, name, {}, **extra)
        assert isinstance(plugin, contract_for(plugin_type))
        check_contract(type(plugin), plugin_type)
        close = getattr(plugin, "close", None)
        if callable(close):
            close()
    finally:
        engine.dispose()


def test_portfolio_plugin_caps_and_never_allocates_more_than_the_capital() -> None:
    plugin = load_plugin("portfolio", "allocator", {"max_allocation_per_asset": 0.3})
    out = plugin.allocate_capital({"capital": Decimal("1000.00")},
                                  [{"id": i} for i in range(5)])  # fmt: skip
    assert out == {str(i): Decimal("200.00") for i in range(5)}
    capped = load_plugin("portfolio", "allocator", {"max_allocation_per_asset": 0.1})
    few = capped.allocate_capital({"capital": Decimal("1000")}, [{"id": 1}, {"id": 2}])
    assert few == {"1": Decimal("100.00"), "2": Decimal("100.00")}  # the rest stays idle


def test_portfolio_plugin_risk_parity_from_returns() -> None:
    rng = np.random.default_rng(3)
    calm, wild = rng.normal(0, 0.01, 200), rng.normal(0, 0.04, 200)
    plugin = load_plugin("portfolio", "allocator",
                         {"allocation_method": "risk_parity", "max_allocation_per_asset": 1})
    out = plugin.allocate_capital({"capital": Decimal("1000")},
                                  [{"id": "calm", "returns": list(calm)},
                                   {"id": "wild", "returns": list(wild)}])  # fmt: skip
    assert out["calm"] > 3 * out["wild"]  # equal risk: the calm asset gets ~4x the money
    assert sum(out.values()) <= Decimal("1000")
    # Without enough history: equal weight.
    short = plugin.allocate_capital({"capital": Decimal("1000")},
                                    [{"id": "a", "returns": [0.01]}, {"id": "b"}])  # fmt: skip
    assert short == {"a": Decimal("500.00"), "b": Decimal("500.00")}
