"""One contract per plugin type of seed 003: an ABC over ``BasePlugin`` with the seed's
method names and a ``CONTRACT_VERSION``.

A plugin may subclass its contract or just provide the methods (the registry checks
structurally, see ``check_contract``); either way it declares the contract version it
was written for, and a different major version is refused.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any

from corec_tasks.errors import PluginError
from plugins.trading.base import BasePlugin

#: Version of every contract below; bump the major on an incompatible change.
CONTRACT_VERSION = "1.0"


class AAAContract(BasePlugin, ABC):
    """Authentication, authorization and accounting (seed 003 §1)."""

    CONTRACT_VERSION = CONTRACT_VERSION

    @abstractmethod
    def authenticate(self, username: str, password: str) -> Any:
        """Check credentials; a session token (or a dict carrying it)."""

    @abstractmethod
    def authorize(self, token: str, action: str) -> bool:
        """True if the token's holder may perform ``action``."""

    @abstractmethod
    def audit_log(self, user_id: int | None, action: str, details: Any) -> Any:
        """Append one audit record."""


class CoreContract(BasePlugin, ABC):
    """The main loop and API server (seed 003 §2)."""

    CONTRACT_VERSION = CONTRACT_VERSION

    @abstractmethod
    def start(self) -> None:
        """Start the API server and the main loop."""

    @abstractmethod
    def stop(self) -> None:
        """Stop and release resources."""

    @abstractmethod
    def execute_trading_loop(self) -> None:
        """Run one full trading cycle."""


class PipelineContract(BasePlugin, ABC):
    """Per-portfolio orchestration of strategy, broker and portfolio (seed 003 §3)."""

    CONTRACT_VERSION = CONTRACT_VERSION

    @abstractmethod
    def execute_portfolio(self, portfolio: Any, assets: Any) -> None:
        """Run the whole pipeline for one portfolio."""

    @abstractmethod
    def process_asset(self, asset: Any, strategy_plugin: Any, broker_plugin: Any) -> dict[str, Any]:
        """Run one asset through its strategy and broker."""


class StrategyContract(BasePlugin, ABC):
    """Trading decisions from predictions and market data (seed 003 §4)."""

    CONTRACT_VERSION = CONTRACT_VERSION

    @abstractmethod
    def process(self, asset: Any, market_data: Any, predictions: Any) -> dict[str, Any]:
        """``{"action": "open"|"close"|"none", "parameters": {...}}`` (seed 003 §4.3)."""


class BrokerContract(BasePlugin, ABC):
    """Order execution with a broker (seed 003 §5)."""

    CONTRACT_VERSION = CONTRACT_VERSION

    @abstractmethod
    def execute(self, action: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """``{"success", "broker_order_id", "broker_response", "error_message"}``."""


class PortfolioContract(BasePlugin, ABC):
    """Capital allocation across a portfolio's assets (seed 003 §6)."""

    CONTRACT_VERSION = CONTRACT_VERSION

    @abstractmethod
    def allocate_capital(self, portfolio: Any, assets: Any) -> dict[str, Any]:
        """Capital per asset id."""


#: Plugin type (as named in config) -> its contract.
CONTRACTS: dict[str, type[BasePlugin]] = {
    "aaa": AAAContract,
    "core": CoreContract,
    "pipeline": PipelineContract,
    "strategy": StrategyContract,
    "broker": BrokerContract,
    "portfolio": PortfolioContract,
}


def contract_for(plugin_type: str) -> type[BasePlugin]:
    """The contract of ``plugin_type``; PluginError naming the known types otherwise."""
    try:
        return CONTRACTS[plugin_type]
    except KeyError:
        raise PluginError(
            plugin_type, f"unknown plugin type; known: {', '.join(CONTRACTS)}"
        ) from None


def _major(version: str) -> str:
    return str(version).split(".", 1)[0]


def contract_problems(cls: type, plugin_type: str) -> list[str]:
    """What keeps ``cls`` from honouring ``plugin_type``'s contract (empty if nothing)."""
    contract = contract_for(plugin_type)
    problems: list[str] = []
    if not (isinstance(cls, type) and issubclass(cls, BasePlugin)):
        problems.append("is not a BasePlugin subclass")
        return problems
    wanted = getattr(cls, "CONTRACT_VERSION", None)
    if wanted is None:
        problems.append(f"declares no CONTRACT_VERSION (this CoreC has {CONTRACT_VERSION})")
    elif _major(wanted) != _major(CONTRACT_VERSION):
        problems.append(f"was written for contract {wanted}, this CoreC has {CONTRACT_VERSION}")
    for name in sorted(getattr(contract, "__abstractmethods__", ())):
        spec = inspect.signature(getattr(contract, name))
        wanted_params = [p for p in spec.parameters if p != "self"]
        impl = getattr(cls, name, None)
        if not callable(impl) or getattr(impl, "__isabstractmethod__", False):
            problems.append(f"does not implement {name}({', '.join(wanted_params)})")
            continue
        try:
            inspect.signature(impl).bind(None, *wanted_params)
        except TypeError:
            problems.append(f"{name} cannot be called as {name}({', '.join(wanted_params)})")
    return problems


def check_contract(cls: type, plugin_type: str) -> None:
    """Raise PluginError naming the class and every problem if it breaks its contract."""
    problems = contract_problems(cls, plugin_type)
    if problems:
        name = getattr(cls, "plugin_name", "") or getattr(cls, "__name__", repr(cls))
        raise PluginError(
            name, f"does not honour the {plugin_type} contract: " + "; ".join(problems)
        )


__all__ = [
    "CONTRACTS",
    "CONTRACT_VERSION",
    "AAAContract",
    "BrokerContract",
    "CoreContract",
    "PipelineContract",
    "PortfolioContract",
    "StrategyContract",
    "check_contract",
    "contract_for",
    "contract_problems",
]
