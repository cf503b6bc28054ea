"""The feeds plugin's options, validated once; unknown or bad keys name themselves.

Rates are per unit of time and ``dt`` is one tick in that unit: with the defaults
(annual drift and volatility) ``dt`` is 5 minutes of a 24/7 market in years.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from corec_tasks.errors import ConfigurationError
from corec_tasks.settings import Settings

PLUGIN = "feeds"
#: Five minutes as a fraction of a 365-day year.
FIVE_MINUTES = 300 / (365 * 86400)

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MarketConfig(_Strict):
    """market_monitor: which symbols, and where their prices come from."""

    source: Literal["gbm", "csv"] = "gbm"
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    #: Starting price per symbol; symbols not listed start at ``default_price``.
    initial_prices: dict[str, PositiveFloat] = {"BTCUSDT": 35_000.0, "ETHUSDT": 2_000.0}
    default_price: PositiveFloat = 100.0
    seed: int = 42
    mu: Finite = 0.05
    sigma: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.6
    dt: PositiveFloat = FIVE_MINUTES
    #: GBM sub-steps per tick: open, high, low, close come from this path.
    substeps: int = Field(12, ge=1, le=10_000)
    #: Mean volume per tick (lognormal around it).
    volume: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 10.0
    #: source "csv": one OHLC file per symbol (columns date, open, high, low, close, volume).
    csv_files: dict[str, str] = {}
    #: At the end of a CSV file: start over (true) or publish nothing more (false).
    loop: bool = True
    #: Closes kept per symbol in Redis for the predictor.
    history: int = Field(256, ge=2, le=100_000)

    @model_validator(mode="after")
    def _consistent(self) -> MarketConfig:
        if not self.symbols or len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbols: must be a non-empty list without repeats")
        if any(not s for s in self.symbols):
            raise ValueError("symbols: a symbol may not be empty")
        if self.source == "csv":
            missing = [s for s in self.symbols if s not in self.csv_files]
            if missing:
                raise ValueError(f"csv_files: no file for {', '.join(missing)} (source is csv)")
        return self


class MacroConfig(_Strict):
    """macro_sync: S&P 500 as GBM, VIX as Ornstein-Uhlenbeck with a floor, or CSV."""

    source: Literal["gbm", "csv"] = "gbm"
    seed: int = 7
    dt: PositiveFloat = FIVE_MINUTES
    sp500_start: PositiveFloat = 4_500.0
    sp500_mu: Finite = 0.07
    sp500_sigma: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.18
    vix_start: PositiveFloat = 18.0
    #: OU: dX = theta (mean - X) dt + sigma dW, then max(X, floor).
    vix_mean: PositiveFloat = 19.0
    vix_theta: PositiveFloat = 5.0
    vix_sigma: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 25.0
    vix_floor: PositiveFloat = 9.0
    #: Correlation of the VIX shock with the S&P 500 shock (stocks down, VIX up).
    rho: Annotated[float, Field(ge=-1, le=1)] = -0.7
    #: source "csv": OHLC files whose close is the level.
    vix_csv: str | None = None
    sp500_csv: str | None = None
    loop: bool = True

    @model_validator(mode="after")
    def _csv_files(self) -> MacroConfig:
        if self.source == "csv" and not (self.vix_csv and self.sp500_csv):
            raise ValueError("vix_csv and sp500_csv: both are required when source is csv")
        return self


class PredictorConfig(_Strict):
    """predictor_temporal: ridge AR(p) on the last ``window`` closes of each symbol."""

    window: int = Field(64, ge=4, le=100_000)
    lags: int = Field(2, ge=1, le=32)
    #: Ridge penalty, relative to the lagged returns' average variance (scale-free).
    alpha: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    #: Ticks ahead; the prediction is the compounded return over them.
    horizon: int = Field(1, ge=1, le=1_000)
    #: "history": the closes market_monitor keeps in Redis; "stream": XREVRANGE of market_data.
    source: Literal["history", "stream"] = "history"
    #: source "stream": how many entries to scan back at most.
    scan: int = Field(20_000, ge=1)

    @model_validator(mode="after")
    def _enough(self) -> PredictorConfig:
        if self.window < self.lags + 3:
            raise ValueError(f"window: needs at least lags + 3 = {self.lags + 3} closes")
        return self


class FeedsConfig(_Strict):
    """The whole plugin config; every section has defaults."""

    #: Seconds per tick: the default idempotency key of a tick is ``time // interval_s``.
    interval_s: PositiveFloat = 60.0
    market: MarketConfig = MarketConfig()
    macro: MacroConfig = MacroConfig()
    predictor: PredictorConfig = PredictorConfig()


def load_config(data: Mapping[str, Any] | FeedsConfig | None) -> FeedsConfig:
    """Validate ``data``; ConfigurationError names each bad key (``plugins.feeds.<key>``)."""
    if isinstance(data, FeedsConfig):
        return data
    try:
        return FeedsConfig.model_validate(dict(data or {}))
    except ValidationError as exc:
        problems = [
            (".".join(["plugins", PLUGIN, *map(str, e["loc"])]),
             str(e["msg"]).removeprefix("Value error, "))
            for e in exc.errors(include_url=False)
        ]  # fmt: skip
        raise ConfigurationError(problems, f"{PLUGIN} plugin config") from None


def config_from_settings(settings: Settings) -> FeedsConfig:
    """The JSON file of the ``feeds`` entry of corec_config.json's ``plugins``, else defaults.

    Relative CSV paths in it are resolved against that file's folder.
    """
    path = settings.plugin_config_file(PLUGIN)
    if path is None:
        return FeedsConfig()
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigurationError([(f"plugins.{PLUGIN}.config_path", f"{path}: {exc}")]) from None
    return _resolve_paths(load_config(data), path.parent)


def _resolve_paths(cfg: FeedsConfig, base: Path) -> FeedsConfig:
    def fix(p: str) -> str:
        return p if Path(p).is_absolute() else str(base / p)

    market = cfg.market.model_copy(
        update={"csv_files": {s: fix(p) for s, p in cfg.market.csv_files.items()}}
    )
    vix, sp500 = cfg.macro.vix_csv, cfg.macro.sp500_csv
    macro = cfg.macro.model_copy(
        update={"vix_csv": vix and fix(vix), "sp500_csv": sp500 and fix(sp500)}
    )
    return cfg.model_copy(update={"market": market, "macro": macro})
