"""The trading plugins' side of ``BasePlugin`` (which lives in the framework,
``corec_tasks.plugin_base``, with ``safe_call``): ``DbConfigLoader``, the stored
configuration per portfolio and asset (seed 003 §8), and the audit hook writing plugin
failures to the ``audit_log`` through the AAA plugin.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from corec_tasks.errors import ConfigurationError, PluginError
from corec_tasks.plugin_base import (
    AuditHook,
    BasePlugin,
    ConfigLayer,
    ConfigLoader,
    is_error,
    log_audit,
    plugin_label,
    safe_call,
)
from plugins.trading.models import Config


def config_key(plugin: str, portfolio_id: int | None = None, asset_id: int | None = None) -> str:
    """The ``Config.key`` holding a plugin's JSON options for a portfolio or an asset."""
    if asset_id is not None:
        return f"plugins.{plugin}.asset.{asset_id}"
    if portfolio_id is not None:
        return f"plugins.{plugin}.portfolio.{portfolio_id}"
    return f"plugins.{plugin}"


class DbConfigLoader:
    """Reads ``Config`` rows ``plugins.<name>``, ``...portfolio.<id>``, ``...asset.<id>``."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def __call__(
        self, plugin: str, portfolio_id: int | None, asset_id: int | None
    ) -> list[ConfigLayer]:
        keys = [config_key(plugin)]
        if portfolio_id is not None:
            keys.append(config_key(plugin, portfolio_id=portfolio_id))
        if asset_id is not None:
            keys.append(config_key(plugin, asset_id=asset_id))
        with self._sessions() as db:
            result = db.execute(select(Config.key, Config.value).where(Config.key.in_(keys)))
            rows: dict[str, str | None] = {key: value for key, value in result}
        layers: list[ConfigLayer] = []
        for key in keys:
            raw = rows.get(key)
            if raw is None:
                continue
            try:
                value = json.loads(raw)
            except ValueError as exc:
                raise ConfigurationError(
                    [(key, f"stored value is not JSON: {exc}")], f"{plugin} plugin config"
                ) from None
            if not isinstance(value, dict):
                raise ConfigurationError(
                    [(key, "stored value must be a JSON object")], f"{plugin} plugin config"
                )
            layers.append((f"config row {key!r}", value))
        return layers


def aaa_audit_hook(aaa: Any, user_id: int | None = None) -> AuditHook:
    """A hook writing each failure to the AuditLog through the AAA plugin's ``audit``."""

    def hook(error: dict[str, Any], exc: PluginError) -> None:
        aaa.audit(user_id, "plugin.error", error)

    return hook


__all__ = [
    "AuditHook",
    "BasePlugin",
    "ConfigLayer",
    "ConfigLoader",
    "DbConfigLoader",
    "aaa_audit_hook",
    "config_key",
    "is_error",
    "log_audit",
    "plugin_label",
    "safe_call",
]
