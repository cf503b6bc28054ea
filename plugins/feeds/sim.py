"""The simulators, as pure numpy functions: GBM candles and an Ornstein-Uhlenbeck level.

Determinism: tick ``k`` of a feed seeded ``seed`` draws from
``numpy.random.default_rng([seed, k])``, so the shocks of a tick depend only on the
seed and the tick number, never on how many ticks a process ran before (a restarted
worker continues the same path from the last close it stored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


def tick_rng(seed: int, tick: int) -> np.random.Generator:
    """The generator of tick ``tick`` of a feed seeded ``seed``."""
    return np.random.default_rng([seed, tick])


@dataclass(frozen=True)
class Candles:
    """One OHLC candle and volume per symbol (arrays of the same length)."""

    open: Array
    high: Array
    low: Array
    close: Array
    volume: Array


def gbm_candles(
    prices: Array,
    shocks: Array,
    mu: float,
    sigma: float,
    dt: float,
) -> Candles:
    """Advance ``prices`` one tick of geometric Brownian motion, as candles.

    ``shocks`` are standard normals of shape ``(symbols, substeps)``; the tick of length
    ``dt`` is split into ``substeps`` exact GBM steps of ``dt / substeps``:
    ``S <- S * exp((mu - sigma^2 / 2) h + sigma sqrt(h) Z)``. Open is the previous close,
    high and low the extremes of the path, close its end. Volume is left at zero.
    """
    n = shocks.shape[1]
    h = dt / n
    log_path = np.cumsum((mu - 0.5 * sigma * sigma) * h + sigma * np.sqrt(h) * shocks, axis=1)
    path = prices[:, None] * np.exp(log_path)
    close = path[:, -1]
    high = np.maximum(prices, path.max(axis=1))
    low = np.minimum(prices, path.min(axis=1))
    return Candles(prices.copy(), high, low, close, np.zeros_like(close))


def market_tick(
    prices: Array, seed: int, tick: int, mu: float, sigma: float, dt: float, substeps: int,
    volume: float,
) -> Candles:  # fmt: skip
    """Tick ``tick`` of the market simulator for all symbols at once (vectorised)."""
    rng = tick_rng(seed, tick)
    shocks = rng.standard_normal((prices.shape[0], substeps))
    c = gbm_candles(prices, shocks, mu, sigma, dt)
    # Lognormal volume with mean ``volume`` (sigma 0.5), larger on bigger moves.
    vol = volume * np.exp(0.5 * rng.standard_normal(prices.shape[0]) - 0.125)
    vol *= 1.0 + np.abs(np.log(c.close / c.open)) / max(sigma * np.sqrt(dt), 1e-12)
    return Candles(c.open, c.high, c.low, c.close, vol)


def ou_step(x: float, z: float, mean: float, theta: float, sigma: float, dt: float,
            floor: float) -> float:  # fmt: skip
    """One exact Ornstein-Uhlenbeck step ``dX = theta (mean - X) dt + sigma dW``, floored.

    Exact discretisation: ``X' = mean + (X - mean) e^{-theta dt}
    + sigma sqrt((1 - e^{-2 theta dt}) / (2 theta)) Z``; then ``max(X', floor)`` keeps
    the VIX level positive and realistic (it has never closed below 9).
    """
    decay = np.exp(-theta * dt)
    sd = sigma * np.sqrt((1.0 - decay * decay) / (2.0 * theta))
    return float(max(mean + (x - mean) * decay + sd * z, floor))


def macro_tick(
    sp500: float, vix: float, seed: int, tick: int, *, sp500_mu: float, sp500_sigma: float,
    vix_mean: float, vix_theta: float, vix_sigma: float, vix_floor: float, rho: float,
    dt: float,
) -> tuple[float, float]:  # fmt: skip
    """Tick ``tick`` of the macro simulator: (S&P 500 by GBM, VIX by OU), shocks correlated
    with ``rho``."""
    z1, z2 = tick_rng(seed, tick).standard_normal(2)
    z_vix = rho * z1 + np.sqrt(1.0 - rho * rho) * z2
    drift = (sp500_mu - 0.5 * sp500_sigma**2) * dt
    new_sp = float(sp500 * np.exp(drift + sp500_sigma * np.sqrt(dt) * z1))
    return new_sp, ou_step(vix, float(z_vix), vix_mean, vix_theta, vix_sigma, dt, vix_floor)
