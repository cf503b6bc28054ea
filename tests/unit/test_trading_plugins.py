"""Every built-in trading plugin loads by type and name and honours its contract."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from corec_tasks.contracts import (
    AAA_CONTRACT_VERSION,
    BROKER_CONTRACT_VERSION,
    CONTRACTS,
    CORE_CONTRACT_VERSION,
    PIPELINE_CONTRACT_VERSION,
    PORTFOLIO_CONTRACT_VERSION,
    PROCESSOR_CONTRACT_VERSION,
    STRATEGY_CONTRACT_VERSION,
    check_contract,
    check_processor,
    contract_for,
)
from corec_tasks.errors import ConfigurationError, CorecError, PluginError
from corec_tasks.plugin_base import BasePlugin
from plugins.pipeline.config import TradingConfig
from plugins.trading.db import create_schema, make_trading_engine, session_factory
from plugins.trading.registry import BUILTIN, default_registry, load_plugin

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


# -- by name, contracts, versions ------------------------------------------------------------


def test_an_installed_distribution_names_its_strategy_by_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distribution advertising ``corec.strategies`` gives its strategy a short name
    the config can use; it cannot take over a built-in name."""
    dist = tmp_path / "corec_flip-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: corec-flip\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[corec.strategies]\n"
        "flip = tests.data.trading_plugins:FlipFlop\n"
        "prediction_threshold = tests.data.trading_plugins:FlipFlop\n")  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = default_registry()
    assert "flip" in registry.names("strategy")
    plugin = load_plugin("strategy", "flip", {"fraction": "0.2"}, registry=registry)
    assert type(plugin).__name__ == "FlipFlop"
    builtin = load_plugin("strategy", "prediction_threshold", registry=registry)
    assert type(builtin).__name__ == "PredictionThresholdStrategy"


def test_a_dotted_path_loads_a_plugin_from_outside_plugins() -> None:
    plugin = load_plugin("strategy", "tests.data.trading_plugins:FlipFlop", {"fraction": "0.2"})
    assert type(plugin).__name__ == "FlipFlop" and plugin.plugin_name == "flip_flop"
    with pytest.raises(ConfigurationError, match=r"plugins\.flip_flop\.fractoin"):
        load_plugin("strategy", "tests.data.trading_plugins:FlipFlop", {"fractoin": "0.2"})
    with pytest.raises(PluginError, match=r"does not honour the portfolio contract"):
        load_plugin("portfolio", "tests.data.trading_plugins:FlipFlop")
    with pytest.raises(PluginError, match=r"cannot load tests\.data\.nowhere:X"):
        load_plugin("strategy", "tests.data.nowhere:X")
    with pytest.raises(ConfigurationError, match=r"dotted path"):
        load_plugin("strategy", "momentum")


def test_a_plugin_for_another_contract_major_is_refused_on_load() -> None:
    with pytest.raises(PluginError, match=r"written for contract 0\.3.*strategy contract is 1\.0"):
        load_plugin("strategy", "tests.data.trading_plugins:OldStrategy")


def test_every_contract_has_its_version_in_the_framework() -> None:
    versions = {t: c.CONTRACT_VERSION for t, c in CONTRACTS.items()}
    assert versions == {"aaa": AAA_CONTRACT_VERSION, "core": CORE_CONTRACT_VERSION,
                        "pipeline": PIPELINE_CONTRACT_VERSION,
                        "strategy": STRATEGY_CONTRACT_VERSION,
                        "broker": BROKER_CONTRACT_VERSION,
                        "portfolio": PORTFOLIO_CONTRACT_VERSION}  # fmt: skip
    assert BROKER_CONTRACT_VERSION == "2.0"  # one broker interface: submit/fetch by id
    assert PROCESSOR_CONTRACT_VERSION == "1.0"


def test_processor_contract_is_checked() -> None:
    async def echo(entity_id: int, payload: Any) -> float:
        return 1.0

    def vector(ctx: Any) -> Any:
        return ctx

    check_processor("v", vector, "vector", PROCESSOR_CONTRACT_VERSION)
    check_processor("a", echo, "async", "1.4")
    with pytest.raises(PluginError, match=r"written for contract 2\.0"):
        check_processor("v", vector, "vector", "2.0")
    with pytest.raises(PluginError, match="must be a coroutine function"):
        check_processor("a", vector, "async", "1.0")

    async def lonely(entity_id: int) -> float:
        return 1.0

    with pytest.raises(PluginError, match=r"called as fn\(entity_id, payload\)"):
        check_processor("a", lonely, "async", "1.0")
    with pytest.raises(PluginError, match=r"called as fn\(ctx\)"):
        check_processor("v", lambda: 0, "vector", "1.0")


def test_plugin_exceptions_are_corec_errors() -> None:
    from plugins.broker.paper import BrokerError
    from plugins.broker.service import ActionError
    from plugins.portfolio.allocation import AllocationError
    from plugins.strategy.rules import StrategyInputError

    for exc in (BrokerError, ActionError, AllocationError, StrategyInputError, PluginError):
        assert issubclass(exc, CorecError), exc


def test_aaa_is_a_base_plugin_loaded_by_type(tmp_path: Path) -> None:
    engine = make_trading_engine(f"sqlite:///{tmp_path / 't.db'}")
    create_schema(engine)
    try:
        aaa = load_plugin("aaa", "aaa", {"max_login_attempts": 3},
                          sessions=session_factory(engine))  # fmt: skip
        assert isinstance(aaa, BasePlugin) and aaa.config.max_login_attempts == 3
        with pytest.raises(ConfigurationError, match=r"plugins\.aaa\.lockout_s"):
            load_plugin("aaa", "aaa", {"lockout_s": -1}, sessions=session_factory(engine))
    finally:
        engine.dispose()


# -- the pipeline config names its plugins -----------------------------------------------------


def test_pipeline_config_names_plugins_and_keeps_older_keys() -> None:
    cfg = TradingConfig()
    assert cfg.plugin("strategy") == ("prediction_threshold", {})
    assert cfg.plugin("portfolio") == ("allocator", {})
    assert cfg.plugin("broker") == ("paper", {})
    old = TradingConfig.model_validate({"portfolio": "book", "broker_adapter": "ccxt",
                                        "allocation_method": "risk_parity",
                                        "broker": {"sandbox": True}})  # fmt: skip
    assert old.portfolio_name == "book"
    assert old.plugin("broker") == ("ccxt", {"sandbox": True})
    assert old.plugin("portfolio") == ("allocator", {"allocation_method": "risk_parity"})
    with pytest.raises(ValueError, match="dotted path"):
        TradingConfig(strategy={"name": 3})


# -- rebalancing with held weights ---------------------------------------------------------------


def test_held_assets_keep_their_weights_within_the_threshold_and_others_share_the_rest() -> None:
    plugin = load_plugin("portfolio", "allocator",
                         {"max_allocation_per_asset": 1, "rebalance_threshold": 0.1})  # fmt: skip
    capital = {"capital": Decimal("1000")}
    # Targets 1/3 each; "a" is held at 0.40 (drift 0.067 < 0.1): kept, the rest shared.
    out = plugin.allocate_capital(capital, [{"id": "a", "weight": 0.40}, {"id": "b"}, {"id": "c"}])
    assert out == {"a": Decimal("400.00"), "b": Decimal("300.00"), "c": Decimal("300.00")}
    # Held at 0.50 (drift 0.167 > 0.1): every asset back to its target.
    out = plugin.allocate_capital(capital, [{"id": "a", "weight": 0.50}, {"id": "b"}, {"id": "c"}])
    assert out == {k: Decimal("333.33") for k in "abc"}
    # Nothing held: targets, as before weights were passed.
    assert plugin.allocate_capital(capital, [{"id": "a"}, {"id": "b"}]) == {
        "a": Decimal("500.00"), "b": Decimal("500.00")}  # fmt: skip
