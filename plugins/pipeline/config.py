"""The trading cycle's options (``plugins/pipeline/config.json``), validated."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corec_tasks.errors import ConfigurationError
from corec_tasks.settings import Settings

PLUGIN = "pipeline"
DEFAULT_PATH = Path(__file__).resolve().parent / "config.json"


class TradingConfig(BaseModel):
    """Seed 003's pipeline and core parameters, plus the pool's portfolio."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The portfolio the pool trades, owned by AAA user ``owner`` (created if missing).
    portfolio: str = Field("pool", min_length=1, max_length=128)
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
    allocation_method: Literal["equal_weight", "risk_parity"] = "equal_weight"
    max_allocation_per_asset: Annotated[Decimal, Field(gt=0, le=1)] = Decimal("0.25")
    #: Options of the prediction_threshold strategy.
    strategy: dict[str, Any] = Field(default_factory=dict)
    #: The exchange: the paper broker, or a live one through ccxt (extra ``exchange``).
    broker_adapter: Literal["paper", "ccxt"] = "paper"
    #: Its options: over plugins/broker/config.json for paper (e.g. ``latency_ms``), the
    #: CcxtBroker's for ccxt (exchange, sandbox, symbols, key variable names).
    broker: dict[str, Any] = Field(default_factory=dict)


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
