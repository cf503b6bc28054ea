"""The trading cycle's plugins, loaded by name through the registry.

A ``PluginSlot`` is one of the cycle's plugin types (strategy, portfolio) as the
pipeline config names it: ``get(portfolio_id, asset_id, cycle)`` builds the plugin with
its options from the config under the ``Config`` rows stored for that portfolio and
asset (``DbConfigLoader``), once per cycle, so a changed row applies from the next
cycle. The trading layer calls ``get`` through ``safe_call``: a bad stored option is
audited and only that asset (or portfolio) is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corec_tasks.plugin_base import BasePlugin, ConfigLoader
from plugins.trading.registry import PluginRegistry

__all__ = ["PluginSlot"]


class PluginSlot:
    """The ``plugin_type`` plugin ``name``, one instance per (portfolio, asset) per cycle."""

    def __init__(
        self,
        plugin_type: str,
        name: str,
        options: Mapping[str, Any],
        *,
        registry: PluginRegistry,
        loader: ConfigLoader | None,
        settings: Any,
    ) -> None:
        self.plugin_type = plugin_type
        #: The plugin's name as configured (``safe_call`` reports errors under it).
        self.plugin_name = name
        self.options = dict(options)
        self.settings = settings
        self._loader = loader
        self._cls = registry.get(plugin_type, name)  # checked against its contract here
        self._cycle: str | None = None
        self._built: dict[tuple[int | None, int | None], BasePlugin] = {}

    def build(self, portfolio_id: int | None = None, asset_id: int | None = None) -> BasePlugin:
        """A new instance with the stored layers for ``portfolio_id`` and ``asset_id``."""
        return self._cls(self.options, loader=self._loader, portfolio_id=portfolio_id,
                         asset_id=asset_id, settings=self.settings)  # fmt: skip

    def get(self, portfolio_id: int | None, asset_id: int | None, cycle: str) -> BasePlugin:
        """The instance for (portfolio, asset) in ``cycle``, built on first use."""
        if cycle != self._cycle:
            self._cycle, self._built = cycle, {}
        key = (portfolio_id, asset_id)
        plugin = self._built.get(key)
        if plugin is None:
            plugin = self._built[key] = self.build(portfolio_id, asset_id)
        return plugin
