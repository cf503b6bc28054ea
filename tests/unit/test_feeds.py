"""The feeds plugin's pure logic: simulators, CSV replay, the model, config, payloads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from corec_tasks.errors import ConfigurationError
from corec_tasks.settings import load_settings
from corec_tasks.streams.schemas import check_payload
from plugins.feeds import sim
from plugins.feeds.config import FeedsConfig, config_from_settings, load_config
from plugins.feeds.macro import macro_payload
from plugins.feeds.market import candle_payload
from plugins.feeds.model import fit_ar, log_returns, predict
from plugins.feeds.replay import ReplayError, load_csv, row_at
from plugins.trading.channels import MACRO_DATA, MARKET_DATA

DATA = Path(__file__).resolve().parents[1] / "data" / "feeds"


def gbm_path(seed: int, steps: int, symbols: int = 3, **kw: float) -> np.ndarray:
    p = np.full(symbols, 100.0)
    out = []
    for k in range(steps):
        c = sim.market_tick(p, seed, k, kw.get("mu", 0.05), kw.get("sigma", 0.6),
                            kw.get("dt", 1e-3), 4, 10.0)  # fmt: skip
        out.append(c.close)
        p = c.close
    return np.array(out)


# -- simulators ------------------------------------------------------------------------


def test_gbm_is_deterministic_per_seed() -> None:
    a, b, c = gbm_path(1, 50), gbm_path(1, 50), gbm_path(2, 50)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    # Tick k depends on (seed, k) only: a restart from a stored close continues the path.
    resumed = sim.market_tick(a[24], 1, 25, 0.05, 0.6, 1e-3, 4, 10.0).close
    assert np.array_equal(resumed, a[25])


def test_gbm_log_returns_have_the_theoretical_mean_and_spread() -> None:
    mu, sigma, dt, steps = 0.8, 0.5, 0.01, 4_000
    closes = gbm_path(11, steps, symbols=50, mu=mu, sigma=sigma, dt=dt)
    r = np.diff(np.log(np.vstack([np.full(50, 100.0), closes])), axis=0)
    expected = (mu - sigma**2 / 2) * dt
    se = sigma * np.sqrt(dt) / np.sqrt(r.size)  # standard error of the pooled mean
    assert abs(r.mean() - expected) < 4 * se
    assert r.std() == pytest.approx(sigma * np.sqrt(dt), rel=0.02)


def test_gbm_candles_are_consistent_and_50_symbols_are_cheap() -> None:
    p = np.linspace(1.0, 50_000.0, 50)
    c = sim.market_tick(p, 5, 0, 0.05, 0.6, 1e-4, 12, 10.0)
    assert np.array_equal(c.open, p)
    assert np.all(c.high >= np.maximum(c.open, c.close))
    assert np.all(c.low <= np.minimum(c.open, c.close))
    assert np.all(c.low > 0) and np.all(c.volume > 0)


def test_ou_reverts_to_its_mean_and_respects_the_floor() -> None:
    x, xs = 60.0, []
    for k in range(5_000):
        z = float(sim.tick_rng(3, k).standard_normal())
        x = sim.ou_step(x, z, mean=19.0, theta=5.0, sigma=25.0, dt=0.01, floor=9.0)
        xs.append(x)
    tail = np.array(xs[1_000:])
    assert tail.min() >= 9.0
    assert abs(tail.mean() - 19.0) < 2.0
    assert sim.ou_step(9.5, -50.0, 19.0, 5.0, 25.0, 0.01, 9.0) == 9.0


def test_macro_tick_is_deterministic_and_vix_moves_against_stocks() -> None:
    kw = dict(sp500_mu=0.07, sp500_sigma=0.18, vix_mean=19.0, vix_theta=5.0, vix_sigma=25.0,
              vix_floor=9.0, rho=-0.9, dt=0.001)  # fmt: skip
    assert sim.macro_tick(4500, 18, 7, 3, **kw) == sim.macro_tick(4500, 18, 7, 3, **kw)
    moves = np.array([sim.macro_tick(4500, 19, 7, k, **kw) for k in range(2_000)])
    corr = np.corrcoef(np.log(moves[:, 0] / 4500), moves[:, 1] - 19)[0, 1]
    assert corr < -0.7


# -- payloads validate against the streams' schemas -------------------------------------


def test_payloads_validate_against_the_schemas() -> None:
    c = sim.market_tick(np.array([35_000.0, 2_000.0]), 42, 0, 0.05, 0.6, 1e-5, 12, 10.0)
    for i, symbol in enumerate(("BTCUSDT", "ETHUSDT")):
        p = candle_payload(symbol, c.open[i], c.high[i], c.low[i], c.close[i], c.volume[i],
                           source="gbm", tick="1")  # fmt: skip
        check_payload(MARKET_DATA, json.dumps(p).encode())
    check_payload(MACRO_DATA, json.dumps(macro_payload(18.2, 4501.0, tick="1")).encode())
    with pytest.raises(ValueError, match="high"):
        candle_payload("X", 10, 9, 11, 10, 1)


# -- CSV replay -------------------------------------------------------------------------


def test_csv_replay_reads_rows_in_order_and_wraps() -> None:
    rows = load_csv(DATA / "sample_ohlc.csv")
    assert len(rows) == 10
    assert (rows[0].date, rows[0].open, rows[0].line) == ("2024-01-01", 100.0, 2)
    assert row_at(rows, 3, loop=True) is rows[3]
    assert row_at(rows, 10, loop=True) is rows[0]
    assert row_at(rows, 10, loop=False) is None


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("2024-01-03,10,9,11,10,5", "high (9) is below low (11)"),
        ("2024-01-03,10,11,9,abc,5", "close is not a number (got 'abc')"),
        ("2024-01-03,10,11,9,10,-1", "volume must not be negative"),
        ("2024-01-03,-10,11,9,10,5", "open must be positive"),
        ("2024-01-03,10,11,9,,5", "missing value for close"),
        ("2024-01-03,12,11,9,10,5", "open and close must lie within [low, high]"),
        ("2024-01-03,10,11,9,10,5,7", "more fields than the header"),
        ("2024-01-03,10,11,9,nan,5", "close is not finite"),
    ],
)
def test_a_bad_csv_row_is_named_by_file_and_line(tmp_path: Path, row: str, problem: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(f"date,open,high,low,close,volume\n2024-01-01,10,11,9,10,5\n\n{row}\n")
    with pytest.raises(ReplayError) as exc:
        load_csv(f)
    assert f"{f}:4: {problem}" in str(exc.value)  # the blank line 3 is skipped, not counted


def test_csv_without_the_columns_or_rows_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("date,open,close\n2024-01-01,1,1\n")
    with pytest.raises(ReplayError, match=r"x.csv:1: header lacks column\(s\) high, low, volume"):
        load_csv(f)
    f.write_text("Date,Open,High,Low,Close,Volume\n")
    with pytest.raises(ReplayError, match="no data rows"):
        load_csv(f)
    with pytest.raises(ReplayError, match="cannot read"):
        load_csv(tmp_path / "missing.csv")


# -- the model --------------------------------------------------------------------------


@pytest.mark.parametrize("drift", [0.002, -0.002])
def test_predictor_gets_the_sign_of_a_trend(drift: float) -> None:
    rng = np.random.default_rng(0)
    r = drift + 0.0005 * rng.standard_normal(64)
    closes = 100 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))
    ret, n = predict(closes, lags=2, alpha=1.0, horizon=1)
    assert np.sign(ret) == np.sign(drift)
    assert n == 62
    ret5, _ = predict(closes, lags=2, alpha=1.0, horizon=5)
    assert np.sign(ret5) == np.sign(drift) and abs(ret5) > abs(ret)


def test_model_fits_a_constant_trend_and_an_ar1() -> None:
    const = fit_ar(np.full(30, 0.01), lags=2, alpha=0.0)
    assert const.intercept == pytest.approx(0.01) and np.allclose(const.coef, 0)
    rng = np.random.default_rng(1)
    r = np.zeros(5_000)
    for t in range(1, r.size):
        r[t] = 0.6 * r[t - 1] + 0.01 * rng.standard_normal()
    fit = fit_ar(r, lags=1, alpha=0.0)
    assert fit.coef[0] == pytest.approx(0.6, abs=0.03)
    assert log_returns(np.array([1.0, np.e])) == pytest.approx([1.0])
    with pytest.raises(ValueError, match="need at least 4 returns"):
        fit_ar(np.zeros(3), lags=2, alpha=1.0)


# -- config -----------------------------------------------------------------------------


def test_config_defaults_and_errors_name_the_key() -> None:
    cfg = load_config(None)
    assert isinstance(cfg, FeedsConfig) and cfg.market.source == "gbm"
    with pytest.raises(ConfigurationError) as exc:
        load_config({"market": {"sigma": -1, "colour": "red"}})
    text = str(exc.value)
    assert "plugins.feeds.market.sigma" in text and "plugins.feeds.market.colour" in text
    with pytest.raises(ConfigurationError, match="csv_files: no file for ETHUSDT"):
        load_config({"market": {"source": "csv", "csv_files": {"BTCUSDT": "a.csv"}}})
    with pytest.raises(ConfigurationError, match="vix_csv and sp500_csv"):
        load_config({"macro": {"source": "csv"}})
    with pytest.raises(ConfigurationError, match="window: needs at least"):
        load_config({"predictor": {"window": 5, "lags": 4}})


def test_the_shipped_config_file_is_the_defaults() -> None:
    shipped = Path(__file__).resolve().parents[2] / "plugins" / "feeds" / "config.json"
    assert load_config(json.loads(shipped.read_text())) == FeedsConfig()


def test_config_comes_from_the_plugins_entry_with_csv_paths_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "feeds.json").write_text(json.dumps(
        {"market": {"source": "csv", "symbols": ["X"], "csv_files": {"X": "x.csv"}}}
    ))  # fmt: skip
    corec = {
        "instance_id": "t",
        "bloques": [],
        "plugins": [{"name": "feeds", "enabled": True, "config_path": "feeds/feeds.json"}],
    }
    (tmp_path / "corec.json").write_text(json.dumps(corec))  # fmt: skip
    cfg = config_from_settings(load_settings(tmp_path / "corec.json"))
    assert cfg.market.csv_files == {"X": str(tmp_path / "feeds" / "x.csv")}
    (tmp_path / "plain.json").write_text(json.dumps({**corec, "plugins": []}))
    assert config_from_settings(load_settings(tmp_path / "plain.json")) == FeedsConfig()
