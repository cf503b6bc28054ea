"""The trading cycle's options (``plugins/pipeline/config.json``), validated.

The cycle's plugins are named here, each as ``{"name": ..., <its options>}``:
``strategy`` (default ``prediction_threshold``), ``portfolio`` (default ``allocator``)
and ``broker`` (default ``paper``). A name is a built-in plugin's or a dotted path
``"module:Class"``; the options go to the plugin, under the ``Config`` rows stored for
the portfolio and the asset (``plugins.<plugin name>.portfolio.<id>``,
``...asset.<id>``), which win.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from corec_tasks.errors import ConfigurationError
from corec_tasks.settings import Settings

PLUGIN = "pipeline"
DEFAULT_PATH = Path(__file__).resolve().parent / "config.json"
#: The plugin each slot loads when its ``name`` is not given.
DEFAULT_NAMES = {"strategy": "prediction_threshold", "portfolio": "allocator", "broker": "paper"}
#: Older top-level keys, moved into the plugin they configure.
_LEGACY = {"allocation_method": "portfolio", "max_allocation_per_asset": "portfolio"}


class TradingConfig(BaseModel):
    """Seed 003's pipeline and core parameters, the pool's portfolio and the plugins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The portfolio the pool trades, owned by AAA user ``owner`` (created if missing).
    portfolio_name: str = Field("pool", min_length=1, max_length=128)
    owner: str = Field("pool", min_length=1, max_length=64)
    #: Minutes between trading cycles (beat).
    global_latency: Annotated[float, Field(gt=0)] = 5
    #: Assets processed at once: the cycle sends them in waves of this size.
    max_parallel_assets: int = Field(16, ge=1, le=10_000)
    #: Assets per Celery message: Celery's own cost per task (milliseconds) is about an
    #: asset's work on the paper broker, so a few assets share one message.
    assets_per_task: int = Field(4, ge=1, le=1_000)
    #: Retries of an asset's transient failure (database, Redis), with backoff.
    error_retry_count: int = Field(3, ge=0, le=20)
    retry_backoff_s: Annotated[float, Field(ge=0)] = 1.0
    #: An asset whose newest authenticated price is older than this is not traded (the
    #: cycle ticks the market first, so its price is seconds old): someone who deletes
    #: the newest prices from Redis cannot make an old one current.
    max_price_age_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    #: The strategy plugin and its options (one instance per asset, per cycle).
    strategy: dict[str, Any] = Field(default_factory=dict)
    #: The portfolio plugin (capital per asset, rebalancing) and its options.
    portfolio: dict[str, Any] = Field(default_factory=dict)
    #: The broker plugin and its options: ``paper`` (over plugins/broker/config.json,
    #: e.g. ``latency_ms``) or ``ccxt`` (exchange, sandbox, symbols, key variable names).
    broker: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys(cls, data: Any) -> Any:
        """Configs written before plugins were named keep working."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("portfolio"), str):
            data["portfolio_name"] = data.pop("portfolio")
        for key, slot in _LEGACY.items():
            if key in data:
                data[slot] = {key: data.pop(key), **(data.get(slot) or {})}
        if "broker_adapter" in data:
            data["broker"] = {"name": data.pop("broker_adapter"), **(data.get("broker") or {})}
        return data

    @field_validator("strategy", "portfolio", "broker")
    @classmethod
    def _plugin_name(cls, value: dict[str, Any]) -> dict[str, Any]:
        name = value.get("name")
        if name is not None and not (isinstance(name, str) and 0 < len(name) <= 200):
            raise ValueError("name must be a plugin name or a dotted path module:Class")
        return value

    def plugin(self, slot: str) -> tuple[str, dict[str, Any]]:
        """The plugin ``slot`` names and its options (without ``name``)."""
        options = dict(getattr(self, slot))
        return str(options.pop("name", DEFAULT_NAMES[slot])), options


def trading_config(settings: Settings) -> TradingConfig:
    """The ``pipeline`` plugin entry's config file, else the packaged one."""
    path = settings.plugin_config_file(PLUGIN) or DEFAULT_PATH
    try:
        return TradingConfig.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            problems = [(f"plugins.{PLUGIN}." + ".".join(str(p) for p in e["loc"]), e["msg"])
                        for e in exc.errors(include_url=False)]  # fmt: skip
            raise ConfigurationError(problems, str(path)) from None
        raise ConfigurationError([(f"plugins.{PLUGIN}", f"cannot read {path}: {exc}")]) from None
