"""BasePlugin: merged and validated config, contracts, loading by name, safe_call."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from corec_tasks.errors import ConfigurationError, PluginError
from plugins.aaa.service import AAAPlugin
from plugins.strategy.plugin import PredictionThresholdStrategy
from plugins.trading.base import (
    BasePlugin,
    ConfigLayer,
    DbConfigLoader,
    aaa_audit_hook,
    config_key,
    is_error,
    safe_call,
)
from plugins.trading.contracts import (
    CONTRACT_VERSION,
    BrokerContract,
    StrategyContract,
    check_contract,
    contract_problems,
)
from plugins.trading.db import create_schema, make_trading_engine, session_factory
from plugins.trading.models import AuditLog, Config
from plugins.trading.registry import PluginRegistry, default_registry, load_plugin


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout: int = Field(10, ge=1)
    url: str = "http://broker.invalid"


class EchoBroker(BrokerContract):
    """A broker that fails on demand."""

    plugin_name = "echo"
    Params: ClassVar[type[BaseModel] | None] = EchoParams
    plugin_debug_vars: ClassVar[list[str]] = ["timeout"]

    def submit_order(
        self,
        client_order_id: str,
        symbol: str,
        side: str,
        order_type: str,
        quantity: Decimal,
        market_price: Decimal,
        limit_price: Decimal | None = None,
    ) -> dict[str, Any]:
        if symbol == "boom":
            raise RuntimeError("exchange down")
        return {"client_order_id": client_order_id, "status": "filled", "success": True}

    def fetch_order(
        self, client_order_id: str, market_price: Decimal | None = None
    ) -> dict[str, Any] | None:
        return None


ORDER = ("c1", "BTC-USD", "buy", "market", Decimal(1), Decimal(100))
BOOM = ("c2", "boom", "buy", "market", Decimal(1), Decimal(100))


def layers(*items: ConfigLayer) -> Any:
    def loader(
        plugin: str, portfolio_id: int | None, asset_id: int | None
    ) -> Sequence[ConfigLayer]:
        assert plugin == "echo"
        return list(items)

    return loader


# -- config -------------------------------------------------------------------------------


def test_plugin_params_default_from_the_params_model() -> None:
    assert EchoBroker.plugin_params == {"timeout": 10, "url": "http://broker.invalid"}
    plugin = EchoBroker()
    assert plugin.config == {"timeout": 10, "url": "http://broker.invalid"}
    assert plugin.debug_info() == {"timeout": 10}


def test_precedence_defaults_then_config_then_portfolio_then_asset() -> None:
    loader = layers(("portfolio", {"timeout": 20, "url": "http://p"}), ("asset", {"timeout": 30}))
    plugin = EchoBroker({"timeout": 5}, loader=loader, portfolio_id=1, asset_id=2)
    assert plugin.config == {"timeout": 30, "url": "http://p"}
    assert isinstance(plugin.params, EchoParams) and plugin.params.timeout == 30


def test_bad_value_names_plugin_key_and_source() -> None:
    with pytest.raises(ConfigurationError) as exc:
        EchoBroker({}, loader=layers(("config row 'plugins.echo.asset.7'", {"timeout": 0})))
    text = str(exc.value)
    assert "echo plugin config" in text
    assert "plugins.echo.timeout" in text
    assert "plugins.echo.asset.7" in text
    assert exc.value.problems[0][0] == "plugins.echo.timeout"


def test_unknown_key_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigurationError, match=r"plugins\.echo\.timout"):
        EchoBroker({"timout": 3})


def test_without_params_model_unknown_keys_still_fail() -> None:
    class Plain(BasePlugin):
        plugin_params: ClassVar[dict[str, Any]] = {"a": 1}

    assert Plain({"a": 2}).config == {"a": 2}
    with pytest.raises(ConfigurationError, match=r"plugins\.Plain\.b"):
        Plain({"b": 2})


def test_db_loader_reads_config_rows(tmp_path: Path) -> None:
    engine = make_trading_engine(f"sqlite:///{tmp_path / 't.db'}")
    try:
        create_schema(engine)
        sessions = session_factory(engine)
        with sessions.begin() as db:
            db.add(Config(key=config_key("echo"), value=json.dumps({"url": "http://global"})))
            db.add(Config(key=config_key("echo", portfolio_id=1), value='{"timeout": 20}'))
            db.add(Config(key=config_key("echo", asset_id=9), value='{"timeout": 40}'))
            db.add(Config(key=config_key("echo", asset_id=10), value="[1]"))
        loader = DbConfigLoader(sessions)
        plugin = EchoBroker({"timeout": 5}, loader=loader, portfolio_id=1, asset_id=9)
        assert plugin.config == {"timeout": 40, "url": "http://global"}
        assert EchoBroker(loader=loader, portfolio_id=1).config["timeout"] == 20
        with pytest.raises(ConfigurationError, match=r"plugins\.echo\.asset\.10"):
            EchoBroker(loader=loader, asset_id=10)
    finally:
        engine.dispose()


# -- contracts and loading ------------------------------------------------------------------


def test_contract_check_accepts_the_strategy_and_refuses_others() -> None:
    check_contract(PredictionThresholdStrategy, "strategy")
    check_contract(EchoBroker, "broker")
    with pytest.raises(PluginError, match=r"does not honour the strategy contract.*process"):
        check_contract(EchoBroker, "strategy")


def test_contract_check_signature_version_and_base() -> None:
    class BadArity(BasePlugin):
        CONTRACT_VERSION = CONTRACT_VERSION

        def process(self, asset: Any) -> dict[str, Any]:
            return {}

    class Old(StrategyContract):
        CONTRACT_VERSION = "0.9"

        def process(self, asset: Any, market_data: Any, predictions: Any) -> dict[str, Any]:
            return {}

    class NotAPlugin:
        def process(self, asset: Any, market_data: Any, predictions: Any) -> dict[str, Any]:
            return {}

    assert contract_problems(BadArity, "strategy") == [
        "process cannot be called as process(asset, market_data, predictions)"
    ]
    assert "written for contract 0.9" in contract_problems(Old, "strategy")[0]
    assert contract_problems(NotAPlugin, "strategy") == ["is not a BasePlugin subclass"]
    with pytest.raises(PluginError, match="unknown plugin type"):
        contract_problems(EchoBroker, "exchange")


def test_load_by_type_and_name() -> None:
    plugin = load_plugin("strategy", "prediction_threshold", {"allow_short": True})
    assert isinstance(plugin, PredictionThresholdStrategy)
    assert plugin.debug_info()["allow_short"] is True
    registry = default_registry()
    registry.register("broker", "echo", EchoBroker)
    broker = load_plugin("broker", "echo", {"timeout": 3}, registry=registry)
    assert isinstance(broker, EchoBroker) and broker.config["timeout"] == 3


def test_unknown_name_and_broken_class_fail_clearly() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown strategy plugin 'nope'.*prediction"):
        load_plugin("strategy", "nope", {})
    registry = PluginRegistry()
    with pytest.raises(PluginError, match=r"'echo'.*does not honour the portfolio contract"):
        registry.register("portfolio", "echo", EchoBroker)
    registry.register("strategy", "lazy", "plugins.trading.base:BasePlugin")
    with pytest.raises(PluginError, match="does not implement process"):
        registry.get("strategy", "lazy")
    registry.register("strategy", "missing", "plugins.nowhere:Nothing")
    with pytest.raises(PluginError, match=r"cannot load plugins\.nowhere:Nothing"):
        registry.get("strategy", "missing")


# -- safe_call ------------------------------------------------------------------------------


def test_safe_call_returns_the_result_when_all_is_well() -> None:
    calls: list[Any] = []
    result = safe_call(EchoBroker(), "submit_order", *ORDER, audit=lambda e, x: calls.append(e))
    assert result["success"] is True and not is_error(result) and calls == []


def test_safe_call_turns_an_exception_into_a_structured_error_and_audits_it() -> None:
    recorded: list[tuple[dict[str, Any], PluginError]] = []
    result = safe_call(
        EchoBroker(), "submit_order", *BOOM, audit=lambda e, x: recorded.append((e, x))
    )
    assert result == {
        "ok": False,
        "plugin": "echo",
        "method": "submit_order",
        "error": "exchange down",
        "error_type": "RuntimeError",
    }
    assert is_error(result)
    [(error, exc)] = recorded
    assert error == result
    assert exc.plugin == "echo" and isinstance(exc.__cause__, RuntimeError)


def test_safe_call_missing_method_and_failing_hook_never_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def bad_hook(error: dict[str, Any], exc: PluginError) -> None:
        raise OSError("audit db down")

    result = safe_call(EchoBroker(), "cancel", "x", audit=bad_hook)
    assert result["ok"] is False and result["error_type"] == "AttributeError"
    assert "audit hook failed for echo.cancel" in caplog.text


def test_safe_call_default_hook_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="corec_tasks.plugin_base"):
        safe_call(EchoBroker(), "submit_order", *BOOM)
    assert '"plugin": "echo"' in caplog.text and "exchange down" in caplog.text


def test_aaa_hook_writes_an_audit_log_row(tmp_path: Path) -> None:
    aaa = AAAPlugin.from_url(f"sqlite:///{tmp_path / 'aaa.db'}")
    try:
        safe_call(EchoBroker(), "submit_order", *BOOM, audit=aaa_audit_hook(aaa))
        with aaa._sessions() as db:
            [row] = db.scalars(select(AuditLog)).all()
        assert row.action == "plugin.error" and row.user_id is None
        details = json.loads(row.details or "{}")
        assert details["plugin"] == "echo" and details["error"] == "exchange down"
    finally:
        aaa.close()


def test_decimal_params_from_json_floats() -> None:
    plugin = load_plugin("strategy", "prediction_threshold", {"stop_pct": 0.03})
    assert plugin.config["stop_pct"] == 0.03
    assert plugin.debug_info()["prediction_threshold"] == Decimal("0.005")
