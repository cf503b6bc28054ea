"""The contracts the framework owns, in one place: one ABC per plugin type of seed 003
(AAA, core, pipeline, strategy, broker, portfolio) and the entity processor contract,
each with its version constant.

A plugin subclasses its type's contract (so it inherits the version it was written
for) or provides the methods on a ``BasePlugin`` and declares ``CONTRACT_VERSION``
itself; the registries check it when they load it (``check_contract``,
``check_processor``), and a different major version is refused. Bump a major on an
incompatible change. Plugins import from here; this module imports no plugin.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from decimal import Decimal
from typing import Any

from corec_tasks.errors import PluginError
from corec_tasks.plugin_base import BasePlugin

AAA_CONTRACT_VERSION = "1.0"
CORE_CONTRACT_VERSION = "1.0"
PIPELINE_CONTRACT_VERSION = "1.0"
STRATEGY_CONTRACT_VERSION = "1.0"
#: 2.0: one broker interface, the exchange's (``submit_order``/``fetch_order`` by
#: client order id); 1.x's ``execute(action, parameters)`` is the framework's order
#: path (``plugins.broker.service.BrokerService``), not a plugin method any more.
BROKER_CONTRACT_VERSION = "2.0"
PORTFOLIO_CONTRACT_VERSION = "1.0"
#: Entity processors (``corec_tasks.blocks.processors``): vector ``fn(ctx) -> (values,
#: errors)`` or async ``fn(entity_id, payload) -> float``.
PROCESSOR_CONTRACT_VERSION = "1.0"
#: Kept for plugins written against the single version of before.
CONTRACT_VERSION = "1.0"


class AAAContract(BasePlugin, ABC):
    """Authentication, authorization and accounting (seed 003 §1)."""

    CONTRACT_VERSION = AAA_CONTRACT_VERSION

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

    CONTRACT_VERSION = CORE_CONTRACT_VERSION

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

    CONTRACT_VERSION = PIPELINE_CONTRACT_VERSION

    @abstractmethod
    def execute_portfolio(self, portfolio: Any, assets: Any) -> None:
        """Run the whole pipeline for one portfolio."""

    @abstractmethod
    def process_asset(self, asset: Any, strategy_plugin: Any, broker_plugin: Any) -> dict[str, Any]:
        """Run one asset through its strategy and broker."""


class StrategyContract(BasePlugin, ABC):
    """Trading decisions from predictions and market data (seed 003 §4)."""

    CONTRACT_VERSION = STRATEGY_CONTRACT_VERSION

    @abstractmethod
    def process(self, asset: Any, market_data: Any, predictions: Any) -> dict[str, Any]:
        """``{"action": "open"|"close"|"none", "parameters": {...}}`` (seed 003 §4.3)."""


class BrokerContract(BasePlugin, ABC):
    """An exchange (seed 003 §5), the one broker interface: orders are placed and found
    by the caller's client order id, so a retried submit never places a second order.
    The framework's order path turns a strategy's action into these calls."""

    CONTRACT_VERSION = BROKER_CONTRACT_VERSION
    #: Shown in errors and logs.
    name: str = "broker"

    @abstractmethod
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
        """Place (or find, for a known id) the order; its exchange record
        (``status``, ``filled_quantity``, ``average_price``, ``fee``, ...)."""

    @abstractmethod
    def fetch_order(
        self, client_order_id: str, market_price: Decimal | None = None
    ) -> dict[str, Any] | None:
        """The exchange record under ``client_order_id``, or None if never placed."""


class PortfolioContract(BasePlugin, ABC):
    """Capital allocation across a portfolio's assets (seed 003 §6)."""

    CONTRACT_VERSION = PORTFOLIO_CONTRACT_VERSION

    @abstractmethod
    def allocate_capital(self, portfolio: Any, assets: Any) -> dict[str, Any]:
        """Capital per asset id (``assets`` may carry each one's current ``weight``)."""


#: Plugin type (as named in config) -> its contract.
CONTRACTS: dict[str, type[BasePlugin]] = {
    "aaa": AAAContract,
    "core": CoreContract,
    "pipeline": PipelineContract,
    "strategy": StrategyContract,
    "broker": BrokerContract,
    "portfolio": PortfolioContract,
}

#: Keywords the framework passes to every plugin constructor.
CONSTRUCTOR_KEYWORDS = ("loader", "portfolio_id", "asset_id", "settings")


def contract_for(plugin_type: str) -> type[BasePlugin]:
    """The contract of ``plugin_type``; PluginError naming the known types otherwise."""
    try:
        return CONTRACTS[plugin_type]
    except KeyError:
        raise PluginError(
            plugin_type, f"unknown plugin type; known: {', '.join(CONTRACTS)}"
        ) from None


def _major(version: object) -> str:
    return str(version).split(".", 1)[0]


def version_problem(wanted: object, have: str, what: str) -> str | None:
    """Why ``wanted`` (the version a plugin declares) does not fit ``have``, or None."""
    if wanted is None:
        return f"declares no CONTRACT_VERSION (this CoreC's {what} contract is {have})"
    if _major(wanted) != _major(have):
        return f"was written for contract {wanted}, this CoreC's {what} contract is {have}"
    return None


def contract_problems(cls: type, plugin_type: str) -> list[str]:
    """What keeps ``cls`` from honouring ``plugin_type``'s contract (empty if nothing)."""
    contract = contract_for(plugin_type)
    problems: list[str] = []
    if not (isinstance(cls, type) and issubclass(cls, BasePlugin)):
        problems.append("is not a BasePlugin subclass")
        return problems
    have = str(contract.CONTRACT_VERSION)
    wrong = version_problem(getattr(cls, "CONTRACT_VERSION", None), have, plugin_type)
    if wrong:
        problems.append(wrong)
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
    try:
        inspect.signature(cls).bind(None, **dict.fromkeys(CONSTRUCTOR_KEYWORDS))
    except TypeError:
        keywords = ", ".join(CONSTRUCTOR_KEYWORDS)
        problems.append(f"its constructor does not take (config, {keywords})")
    except ValueError:
        pass  # no signature to inspect (a C extension): trust it
    return problems


def check_contract(cls: type, plugin_type: str) -> None:
    """Raise PluginError naming the class and every problem if it breaks its contract."""
    problems = contract_problems(cls, plugin_type)
    if problems:
        name = getattr(cls, "plugin_name", None) or getattr(cls, "__name__", repr(cls))
        raise PluginError(
            str(name), f"does not honour the {plugin_type} contract: " + "; ".join(problems)
        )


def check_processor(name: str, fn: Any, kind: str, version: object) -> None:
    """Raise PluginError unless ``fn`` fits the processor contract of ``kind`` at
    ``version`` (the version its plugin declares, by default this CoreC's)."""
    wrong = version_problem(version, PROCESSOR_CONTRACT_VERSION, "processor")
    if wrong:
        raise PluginError(name, f"processor {wrong}")
    if not callable(fn):
        raise PluginError(name, "a processor must be callable")
    if kind == "async" and not inspect.iscoroutinefunction(fn):
        raise PluginError(name, "an async processor must be a coroutine function")
    wanted: tuple[str, ...] = ("entity_id", "payload") if kind == "async" else ("ctx",)
    try:
        inspect.signature(fn).bind(*wanted)
    except TypeError:
        raise PluginError(
            name, f"a {kind} processor is called as fn({', '.join(wanted)})"
        ) from None
    except ValueError:
        pass


__all__ = [
    "AAA_CONTRACT_VERSION",
    "BROKER_CONTRACT_VERSION",
    "CONSTRUCTOR_KEYWORDS",
    "CONTRACTS",
    "CONTRACT_VERSION",
    "CORE_CONTRACT_VERSION",
    "PIPELINE_CONTRACT_VERSION",
    "PORTFOLIO_CONTRACT_VERSION",
    "PROCESSOR_CONTRACT_VERSION",
    "STRATEGY_CONTRACT_VERSION",
    "AAAContract",
    "BrokerContract",
    "CoreContract",
    "PipelineContract",
    "PortfolioContract",
    "StrategyContract",
    "check_contract",
    "check_processor",
    "contract_for",
    "contract_problems",
    "version_problem",
]
