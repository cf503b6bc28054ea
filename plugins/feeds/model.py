"""predictor_temporal's model: a ridge-regularised AR(p) on log returns, per symbol.

From the last ``window`` closes ``P_0 .. P_T`` of a symbol, the log returns
``r_t = ln(P_t / P_{t-1})`` are regressed on their own ``p`` previous values::

    r_t = a + b_1 r_{t-1} + ... + b_p r_{t-p} + e_t

fitted by ridge regression: the lag coefficients ``b`` are shrunk by a penalty
``lambda = alpha * trace(Xc' Xc) / p`` (``alpha`` relative to the lags' own variance, so
the model is scale-free), the intercept ``a`` is not penalised (the data are centred
first). Solved as a least-squares problem on the augmented system, so a constant
series (zero variance) still fits: ``b = 0`` and ``a`` = the mean return.

The forecast iterates the fitted recursion ``horizon`` steps ahead and compounds:
``predicted_return = exp(r_{T+1} + ... + r_{T+h}) - 1``, a simple return over the
horizon. With strong shrinkage the model falls back to the drift (the mean return);
with little it captures momentum (``b > 0``) or mean reversion (``b < 0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

MODEL = "ridge_ar"


@dataclass(frozen=True)
class Fit:
    """A fitted AR(p): intercept, lag coefficients (lag 1 first), observations used."""

    intercept: float
    coef: Array
    n: int

    def forecast(self, recent: Array, horizon: int) -> float:
        """Compounded simple return over ``horizon`` steps after ``recent`` (oldest first)."""
        p = self.coef.shape[0]
        hist = list(recent[-p:][::-1])  # newest first, like coef
        total = 0.0
        for _ in range(horizon):
            nxt = self.intercept + float(np.dot(self.coef, hist))
            total += nxt
            hist = [nxt, *hist[:-1]]
        return float(np.expm1(total))


def log_returns(closes: Array) -> Array:
    """``ln(P_t / P_{t-1})`` of positive closes, oldest first."""
    return np.diff(np.log(closes))


def fit_ar(returns: Array, lags: int, alpha: float) -> Fit:
    """Fit the ridge AR(``lags``) to ``returns`` (oldest first); ValueError if too short."""
    n = returns.shape[0] - lags
    if n < 2:
        got = returns.shape[0]
        raise ValueError(f"need at least {lags + 2} returns for {lags} lags, got {got}")
    # Row i: the p returns before r[lags + i], lag 1 first.
    x = np.column_stack([returns[lags - k : lags - k + n] for k in range(1, lags + 1)])
    y = returns[lags:]
    xm, ym = x.mean(axis=0), y.mean()
    xc, yc = x - xm, y - ym
    lam = alpha * float(np.einsum("ij,ij->", xc, xc)) / lags
    a_mat = np.vstack([xc, np.sqrt(lam) * np.eye(lags)])
    b_vec = np.concatenate([yc, np.zeros(lags)])
    coef = np.linalg.lstsq(a_mat, b_vec, rcond=None)[0]
    return Fit(float(ym - xm @ coef), coef, n)


def predict(closes: Array, lags: int, alpha: float, horizon: int) -> tuple[float, int]:
    """(predicted simple return over ``horizon``, observations) from closes, oldest first."""
    r = log_returns(closes)
    fit = fit_ar(r, lags, alpha)
    return fit.forecast(r, horizon), fit.n
