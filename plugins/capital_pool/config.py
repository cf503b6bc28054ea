"""The plugin's YAML config (``capital_pool.yaml``), validated with pydantic."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from corec_tasks.errors import ConfigurationError

log = logging.getLogger(__name__)

DEFAULT_PATH = Path(__file__).resolve().parent / "capital_pool.yaml"

Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False, decimal_places=2)]
Ratio = Annotated[Decimal, Field(gt=0, le=1, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Phase(_Strict):
    """A phase of the pool by equity; the seed's three are the default."""

    name: str = Field(min_length=1)
    min_equity: Money
    risk_per_trade: Ratio


class CapitalRules(_Strict):
    """``capital_config``: the money rules."""

    min_contribution: Money = Decimal("100")
    max_amount: Money = Decimal("1000000000")
    max_active_ratio: Ratio = Decimal("0.60")
    phases: tuple[Phase, ...] = (
        Phase(name="seed", min_equity=Decimal("100"), risk_per_trade=Decimal("0.03")),
        Phase(name="growth", min_equity=Decimal("1000"), risk_per_trade=Decimal("0.02")),
        Phase(name="mature", min_equity=Decimal("10000"), risk_per_trade=Decimal("0.01")),
    )
    slots: int = Field(5, ge=1, le=10_000)
    min_allocation: Money = Decimal("10")
    allocation_ttl_s: int = Field(3600, ge=1)
    #: A trading result's profit is at most its allocation's amount times this
    #: (``accounting.check_result``; 1: it gains at most the capital it risked, as it
    #: loses at most that).
    max_profit_ratio: Annotated[Decimal, Field(gt=0, le=100, allow_inf_nan=False)] = \
        Decimal("1")  # fmt: skip

    @model_validator(mode="after")
    def _phases_ordered(self) -> CapitalRules:
        if not self.phases:
            raise ValueError("phases: at least one phase is required")
        mins = [p.min_equity for p in self.phases]
        if mins != sorted(mins) or len(set(mins)) != len(mins):
            raise ValueError("phases: min_equity must increase strictly from one phase to the next")
        if self.min_contribution > self.max_amount:
            raise ValueError("min_contribution is above max_amount")
        return self


class MacroRules(_Strict):
    """``macro_config``: the VIX rule and its fallback."""

    vix_threshold: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] = Decimal("20")
    vix_risk_factor: Ratio = Decimal("0.5")
    max_age_s: int = Field(900, ge=1)


class Resilience(_Strict):
    """``resilience``: the status cache and the circuit breakers."""

    cache_ttl_s: int = Field(1800, ge=1)
    breaker_fail_max: int = Field(5, ge=1)
    breaker_reset_s: int = Field(30, ge=1)


class CapitalConfig(_Strict):
    """The whole plugin config."""

    capital_config: CapitalRules = CapitalRules()
    macro_config: MacroRules = MacroRules()
    resilience: Resilience = Resilience()

    @model_validator(mode="before")
    @classmethod
    def _obsolete_auth(cls, data: Any) -> Any:
        """An older file's ``auth: {require_token: ...}`` is read and ignored: money tasks
        now always need a grant, which is stricter than either value was."""
        if isinstance(data, dict) and isinstance(data.get("auth"), dict) \
                and set(data["auth"]) <= {"require_token"} \
                and all(isinstance(v, bool) for v in data["auth"].values()):  # fmt: skip
            log.warning("capital_pool config: auth.require_token is obsolete and ignored "
                        "(capital tasks always need a grant); delete it")  # fmt: skip
            data = {k: v for k, v in data.items() if k != "auth"}
        return data


def parse_config(data: Any, source: str = "capital_pool config") -> CapitalConfig:
    """Validate a loaded YAML document; ConfigurationError names every bad key."""
    try:
        return CapitalConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = [
            (".".join(str(p) for p in err["loc"]) or "(top)",
             str(err["msg"]).removeprefix("Value error, "))
            for err in exc.errors(include_url=False)
        ]  # fmt: skip
        raise ConfigurationError(problems, source) from None


def load_config(path: str | Path | None = None) -> CapitalConfig:
    """Load ``path`` (default: the packaged ``capital_pool.yaml``)."""
    file = Path(path) if path else DEFAULT_PATH
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError([("config_path", f"cannot read {file}: {exc}")]) from None
    return parse_config(data, str(file))
