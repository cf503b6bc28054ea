"""Loading plugins by type and name: a registry of classes, each checked against its
type's contract when registered.

Built-in plugins are registered as ``"module:Class"`` strings and imported on first
use, so importing the registry imports no plugin. There is no global registry:
``default_registry()`` builds a fresh one.

A plugin that is not built in is named in config by its dotted path, ``"module:Class"``
(``"strategy": {"name": "my_pkg.strategies:Momentum"}``): the registry imports it,
checks it against its type's contract (version included) and keeps it under that name.

An installed distribution can also give it a short name through an entry-point group:
``corec.strategies``, ``corec.portfolios`` or ``corec.brokers``
(``[project.entry-points."corec.strategies"] momentum = "my_pkg.strategies:Momentum"``
in its ``pyproject.toml``); the config then says ``"name": "momentum"``. A built-in name
cannot be taken over that way: the built-in wins and the clash is logged.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from corec_tasks.contracts import CONTRACTS, check_contract, contract_for
from corec_tasks.errors import ConfigurationError, PluginError
from corec_tasks.plugin_base import BasePlugin, ConfigLoader

log = logging.getLogger(__name__)

#: Plugins shipped with CoreC: type -> name -> "module:Class".
BUILTIN: dict[str, dict[str, str]] = {
    "strategy": {"prediction_threshold": "plugins.strategy.plugin:PredictionThresholdStrategy"},
    "portfolio": {"allocator": "plugins.portfolio.plugin:AllocatorPortfolio"},
    "pipeline": {"celery": "plugins.pipeline.plugin:CeleryPipeline"},
    "broker": {
        "paper": "plugins.broker.paper:PaperBroker",
        "ccxt": "plugins.broker.ccxt_adapter:CcxtBroker",
    },
    "core": {"core": "plugins.pipeline.plugin:CorePlugin"},
    "aaa": {"aaa": "plugins.aaa.service:AAAPlugin"},
}


class PluginRegistry:
    """Plugin type -> name -> class (or a lazy ``"module:Class"`` reference)."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, type[BasePlugin] | str]] = {t: {} for t in CONTRACTS}

    def register(self, plugin_type: str, name: str, cls: type[BasePlugin] | str) -> None:
        """Add ``cls`` under ``name``; a class is checked against the contract now."""
        contract_for(plugin_type)
        if not isinstance(cls, str):
            check_contract(cls, plugin_type)
        self._entries[plugin_type][name] = cls

    def names(self, plugin_type: str) -> list[str]:
        """The registered names of one type, sorted."""
        contract_for(plugin_type)
        return sorted(self._entries[plugin_type])

    def get(self, plugin_type: str, name: str) -> type[BasePlugin]:
        """The class registered as ``name`` (or at the dotted path ``name``, ``"module:Class"``);
        ConfigurationError naming the known ones."""
        contract_for(plugin_type)
        entry = self._entries[plugin_type].get(name)
        if entry is None and ":" in name:
            entry = name
        if entry is None:
            known = ", ".join(self.names(plugin_type)) or "none"
            raise ConfigurationError(
                [
                    (
                        f"plugins.{plugin_type}",
                        f"unknown {plugin_type} plugin {name!r}; known: {known} "
                        "(or a dotted path, module:Class)",
                    )
                ]
            )
        if isinstance(entry, str):
            entry = _import(name, entry)
            check_contract(entry, plugin_type)
            self._entries[plugin_type][name] = entry
        return entry


def _import(name: str, ref: str) -> type[BasePlugin]:
    module, _, attr = ref.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise PluginError(name, f"cannot load {ref}: {exc}") from exc
    if not isinstance(cls, type):
        raise PluginError(name, f"{ref} is not a class")
    return cls


#: Entry-point groups through which installed distributions name their plugins.
ENTRY_POINT_GROUPS: dict[str, str] = {
    "strategy": "corec.strategies",
    "portfolio": "corec.portfolios",
    "broker": "corec.brokers",
}


def default_registry() -> PluginRegistry:
    """A new registry holding CoreC's built-in plugins, then the ones installed
    distributions advertise (``ENTRY_POINT_GROUPS``), imported on first use."""
    registry = PluginRegistry()
    for plugin_type, entries in BUILTIN.items():
        for name, ref in entries.items():
            registry.register(plugin_type, name, ref)
    for plugin_type, group in ENTRY_POINT_GROUPS.items():
        for ep in entry_points(group=group):
            if ep.name in BUILTIN.get(plugin_type, {}):
                log.warning("entry point %s = %s in %s ignored: %r is a built-in %s",
                            ep.name, ep.value, group, ep.name, plugin_type)  # fmt: skip
                continue
            registry.register(plugin_type, ep.name, ep.value)
    return registry


def load_plugin(
    plugin_type: str,
    name: str,
    config: Mapping[str, Any] | None = None,
    *,
    registry: PluginRegistry | None = None,
    loader: ConfigLoader | None = None,
    portfolio_id: int | None = None,
    asset_id: int | None = None,
    **kwargs: Any,
) -> BasePlugin:
    """An instance of the ``plugin_type`` plugin registered as ``name``, configured with
    ``config`` merged with the stored JSON ``loader`` reads (and validated)."""
    cls = (registry or default_registry()).get(plugin_type, name)
    return cls(config, loader=loader, portfolio_id=portfolio_id, asset_id=asset_id, **kwargs)


__all__ = ["BUILTIN", "ENTRY_POINT_GROUPS", "PluginRegistry", "default_registry", "load_plugin"]
