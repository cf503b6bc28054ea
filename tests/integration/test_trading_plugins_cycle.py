"""The trading cycle's plugins by name (issue 11): a strategy from outside plugins/
named in the pipeline config trades; a plugin that raises is audited and skipped while
the cycle goes on; a Config row configures one asset; rebalance_threshold acts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from corec_tasks.settings import Settings
from plugins.capital_pool.service import CapitalPool
from plugins.pipeline.config import TradingConfig
from plugins.pipeline.cycle import Trading, summarise
from plugins.trading.base import config_key
from plugins.trading.models import AuditLog, Config, Order, Position, PositionSide

pytestmark = pytest.mark.integration

FLIP = "tests.data.trading_plugins:FlipFlop"
EAGER = {"prediction_threshold": "0.00001", "exit_band": "0.000001"}


@pytest.fixture()
def trading(capital_settings: Settings, pool: CapitalPool) -> Iterator[Any]:
    """A factory of trading layers on a funded pool; each is closed after the test."""
    pool.contribute("alice", "10000", "a-1", principal="operator:test")
    made: list[Trading] = []

    def make(**config: Any) -> Trading:
        made.append(Trading(capital_settings, TradingConfig(**config)))
        return made[-1]

    yield make
    for t in made:
        t.close()


def _cycles(t: Trading, n: int, prefix: str = "c") -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        out.extend(t.process_asset(job) for job in t.prepare(f"{prefix}{i}").jobs)
    return out


def _audits(t: Trading) -> list[dict[str, Any]]:
    with t.sessions() as db:
        rows = db.scalars(select(AuditLog).where(AuditLog.action == "plugin.error")).all()
        return [json.loads(r.details or "{}") for r in rows]


def test_a_strategy_named_by_dotted_path_trades_in_the_cycle(trading: Any) -> None:
    t = trading(strategy={"name": FLIP})
    assert type(t.strategies.build()).__name__ == "FlipFlop"
    results = _cycles(t, 3)
    actions = [r["action"] for r in results]
    assert actions == ["open", "open", "close", "close", "open", "open"], results
    assert all(r["ok"] for r in results), results
    with t.sessions() as db:
        assert len(db.scalars(select(Order)).all()) == 6


def test_a_raising_strategy_is_audited_and_the_rest_of_the_cycle_trades(trading: Any) -> None:
    t = trading(strategy={"name": FLIP})
    _, assets = t.ensure_portfolio()
    bad = assets[0][1]
    t = trading(strategy={"name": FLIP, "explode_on": bad})
    results = _cycles(t, 2)
    mine = [r for r in results if r["symbol"] == bad]
    others = [r for r in results if r["symbol"] != bad]
    assert all(not r["ok"] and r["action"] == "none" for r in mine), mine
    assert "flip_flop.process: flip_flop cannot trade" in mine[0]["error"]
    assert [r["action"] for r in others] == ["open", "close"], others
    audits = _audits(t)
    assert len(audits) == 2  # one row per failed call, both cycles
    assert audits[0]["plugin"] == "flip_flop" and audits[0]["method"] == "process"
    assert audits[0]["error_type"] == "RuntimeError"
    summary = summarise("c1", results, 0)
    assert len(summary["errors"]) == 2


def test_a_raising_portfolio_plugin_skips_that_cycles_allocation(trading: Any) -> None:
    t = trading(strategy={"name": FLIP},
                portfolio={"name": "tests.data.trading_plugins:BrokenPortfolio"})  # fmt: skip
    prepared = t.prepare("c0")
    assert prepared.portfolio_error == "broken_portfolio divides by zero"
    assert [j["cap"] for j in prepared.jobs] == ["0", "0"]
    results = [t.process_asset(job) for job in prepared.jobs]
    assert all(r["action"] == "none" for r in results), results  # nothing to size with
    [audit] = _audits(t)
    assert audit["plugin"] == "broken_portfolio" and audit["method"] == "allocate_capital"
    assert audit["error_type"] == "ZeroDivisionError"


def test_a_config_row_overrides_the_threshold_for_one_asset_only(trading: Any) -> None:
    # Globally the threshold is out of reach (50 %): only the asset with the row trades.
    strict = {"prediction_threshold": "0.5", "exit_band": "0.0001"}
    t = trading(strategy=strict)
    portfolio_id, assets = t.ensure_portfolio()
    (eager_id, eager_sym), (other_id, _) = assets
    with t.sessions.begin() as db:
        db.add(Config(key=config_key("prediction_threshold", asset_id=eager_id),
                      value=json.dumps(EAGER)))  # fmt: skip
    first = t.strategies.get(portfolio_id, eager_id, "x")
    second = t.strategies.get(portfolio_id, other_id, "x")
    assert first.debug_info()["prediction_threshold"] == Decimal("0.00001")
    assert second.debug_info()["prediction_threshold"] == Decimal("0.5")
    results = _cycles(t, 12)
    traded = {r["symbol"] for r in results if r["action"] in ("open", "close")}
    assert traded == {eager_sym}, results
    assert all(r["ok"] for r in results), results


def _hold(t: Trading, asset_id: int, symbol: str, value: Decimal) -> None:
    """An open long in ``symbol`` worth ``value`` at its latest price."""
    closes = t._closes([symbol])[symbol]
    price = Decimal(repr(closes[-1]))
    portfolio_id, _ = t.ensure_portfolio()
    with t.sessions.begin() as db:
        db.add(Position(portfolio_id=portfolio_id, asset_id=asset_id, side=PositionSide.LONG,
                        quantity=(value / price).quantize(Decimal("0.00000001")),
                        entry_price=price))  # fmt: skip


@pytest.mark.parametrize(("threshold", "rebalanced"), [("0.25", False), ("0.05", True)])
def test_rebalance_threshold_decides_whether_drifted_weights_are_rebalanced(
    trading: Any, threshold: str, rebalanced: bool
) -> None:
    """Two held assets, targets 50/50, held 60/30 (drifts 0.1 and 0.2): within a 0.25
    threshold nothing moves; beyond 0.05 the overweight one is rebalanced (closed), the
    underweight one is not (the strategy sizes opens, a rebalance only trims)."""
    t = trading(strategy=EAGER, portfolio={"max_allocation_per_asset": "1",
                                           "rebalance_threshold": threshold})  # fmt: skip
    prepared = t.prepare("warm")
    tradable = (t.max_active_ratio * Decimal(prepared.equity)).quantize(Decimal("0.01"))
    _, [(a_id, a_sym), (b_id, b_sym)] = t.ensure_portfolio()
    _hold(t, a_id, a_sym, tradable * Decimal("0.6"))
    _hold(t, b_id, b_sym, tradable * Decimal("0.3"))
    jobs = {j["symbol"]: j for j in t.prepare("r0").jobs}
    assert jobs[b_sym]["rebalance"] is False
    assert jobs[a_sym]["rebalance"] is rebalanced
    if not rebalanced:  # held as they are: each cap is the position's own value
        assert abs(Decimal(jobs[a_sym]["cap"]) - tradable * Decimal("0.6")) < tradable / 100
    else:
        assert Decimal(jobs[a_sym]["cap"]) == (tradable / 2).quantize(Decimal("0.01"))
    results = {job["symbol"]: t.process_asset(job) for job in jobs.values()}
    rebalances = [s for s, r in results.items() if str(r.get("reason", "")).startswith("rebalance")]
    assert rebalances == ([a_sym] if rebalanced else []), results
    if rebalanced:
        assert results[a_sym]["action"] == "close" and results[a_sym]["ok"], results


def test_a_bad_config_row_skips_only_its_asset(trading: Any) -> None:
    t = trading(strategy={"name": FLIP})
    _, [(bad_id, bad_sym), (_, good_sym)] = t.ensure_portfolio()
    with t.sessions.begin() as db:
        db.add(Config(key=config_key("flip_flop", asset_id=bad_id), value='{"fraction": "x"}'))
    results = {r["symbol"]: r for r in _cycles(t, 1)}
    assert results[good_sym]["action"] == "open", results
    assert not results[bad_sym]["ok"] and "plugins.flip_flop.fraction" in results[bad_sym]["error"]
    [audit] = _audits(t)
    assert audit["plugin"] == FLIP and audit["method"] == "get"  # the configured name
    assert audit["error_type"] == "ConfigurationError"
