"""Portfolio allocation math: pure functions on numpy arrays, money in ``Decimal``.

Weights are floats (they are ratios, and the solvers need floats); amounts of
money are ``Decimal`` and only ever rounded down, so an allocation never spends
more than the capital it was given.

Risk parity here is *equal risk contribution* (risk budgeting), not inverse
volatility: asset ``i`` contributes ``RC_i = w_i (Σw)_i / (wᵀΣw)`` of the
portfolio variance, and the weights are chosen so that ``RC_i = b_i`` for the
budgets ``b`` (``1/n`` each by default). It is solved with Spinu's convex
formulation (F. Spinu, "An algorithm for computing risk parity weights", 2013):

    minimise  F(y) = ½ yᵀCy − Σ b_i ln y_i   over y > 0,

whose unique minimiser satisfies ``y_i (Cy)_i = b_i`` (so ``yᵀCy = Σb = 1``).
``C = D⁻¹ΣD⁻¹`` is the correlation matrix, ``D = diag(σ)``: for ``x = Dw``,
``w_i (Σw)_i = x_i (Cx)_i``, so the weights are ``w ∝ y_i / σ_i`` normalised to
sum 1; working on ``C`` keeps Newton well scaled whatever the volatilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_DOWN, ROUND_FLOOR, Decimal, localcontext
from typing import Any

import numpy as np
import numpy.typing as npt

from corec_tasks.errors import CorecError

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

CENT = Decimal("0.01")
BUDGET_SUM_TOL = 1e-9
"""Budgets and weights must sum to 1 within this."""
SYMMETRY_RTOL = 1e-8
"""``|Σ − Σᵀ|`` may reach this fraction of the largest ``|Σ_ij|`` (JSON rounding)."""
PSD_RTOL = 1e-10
"""An eigenvalue above ``−PSD_RTOL × largest |eigenvalue|`` counts as zero, not negative."""

# Spinu's damped Newton: a full step once the Newton decrement of the
# self-concordant (rescaled) objective is below this, a damped 1/(1+λ) step before.
_FULL_STEP_DECREMENT = 0.95 * (3.0 - 5.0**0.5) / 2.0


class AllocationError(CorecError, ValueError):
    """Allocation input is invalid or has no solution; the message says which."""


def _vector(values: ArrayLike, name: str) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise AllocationError(f"{name} must be a list of numbers.") from None
    if arr.ndim != 1 or arr.size == 0:
        raise AllocationError(f"{name} must be a non-empty one-dimensional list of numbers.")
    if not np.all(np.isfinite(arr)):
        raise AllocationError(f"{name} must contain only finite numbers.")
    return arr


def validate_covariance(cov: ArrayLike) -> FloatArray:
    """Check ``cov`` is a finite, square, symmetric, positive semidefinite matrix.

    Returns it as a float array, symmetrised (``(Σ + Σᵀ)/2``) so rounding in the
    input does not leak into the results. Raises ``AllocationError`` otherwise.
    """
    try:
        arr = np.asarray(cov, dtype=np.float64)
    except (TypeError, ValueError):
        raise AllocationError(
            "The covariance must be a matrix (a list of rows) of numbers."
        ) from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise AllocationError(
            f"The covariance must be a non-empty square matrix; got shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise AllocationError("The covariance must contain only finite numbers.")
    scale = float(np.max(np.abs(arr)))
    asym = float(np.max(np.abs(arr - arr.T)))
    if asym > SYMMETRY_RTOL * scale:
        i, j = np.unravel_index(int(np.argmax(np.abs(arr - arr.T))), arr.shape)
        raise AllocationError(
            f"The covariance is not symmetric: entry [{i}][{j}] is {arr[i, j]:g} "
            f"but [{j}][{i}] is {arr[j, i]:g}."
        )
    sym: FloatArray = (arr + arr.T) / 2.0
    eig = np.linalg.eigvalsh(sym)
    if eig[0] < -PSD_RTOL * max(float(np.max(np.abs(eig))), np.finfo(np.float64).tiny):
        raise AllocationError(
            "The covariance is not positive semidefinite (its smallest eigenvalue is "
            f"{eig[0]:.3g}); a covariance matrix cannot give a negative variance."
        )
    return sym


def validate_budgets(budgets: ArrayLike | None, n: int) -> FloatArray:
    """Risk budgets: ``n`` positive finite numbers summing to 1 (``1/n`` each when ``None``)."""
    if budgets is None:
        return np.full(n, 1.0 / n)
    b = _vector(budgets, "The risk budgets")
    if b.size != n:
        raise AllocationError(
            f"There are {b.size} risk budgets for {n} assets; give one per asset."
        )
    if np.any(b <= 0):
        raise AllocationError("Every risk budget must be positive (> 0).")
    total = float(b.sum())
    if abs(total - 1.0) > BUDGET_SUM_TOL:
        raise AllocationError(f"The risk budgets must sum to 1; they sum to {total:.12g}.")
    return b


def equal_weight(n: int) -> FloatArray:
    """``n`` equal weights ``1/n``."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise AllocationError(f"The number of assets must be a positive integer; got {n!r}.")
    return np.full(int(n), 1.0 / int(n))


def risk_contributions(weights: ArrayLike, cov: ArrayLike) -> FloatArray:
    """Each asset's share of portfolio variance, ``w_i (Σw)_i / (wᵀΣw)``; they sum to 1."""
    w = _vector(weights, "The weights")
    sigma = np.asarray(cov, dtype=np.float64)
    if sigma.shape != (w.size, w.size):
        raise AllocationError(
            f"The covariance has shape {sigma.shape} but there are {w.size} weights."
        )
    marginal = sigma @ w
    variance = float(w @ marginal)
    if variance <= 0:
        raise AllocationError("The portfolio has zero variance; risk contributions are undefined.")
    out: FloatArray = w * marginal / variance
    return out


def risk_parity(
    cov: ArrayLike,
    budgets: ArrayLike | None = None,
    tol: float = 1e-12,
    max_iter: int = 200,
) -> FloatArray:
    """Long-only weights whose risk contributions equal the budgets (equal by default).

    Solves ``w_i (Σw)_i / (wᵀΣw) = b_i``, ``w >= 0``, ``Σw = 1`` by Spinu's damped
    Newton method on ``F(y) = ½ yᵀCy − Σ b_i ln y_i`` (``C`` the correlation
    matrix): strictly convex, so the solution is unique and the method converges
    from any positive start, quadratically near the end. Stops when every
    ``|y_i (Cy)_i − b_i| <= tol`` (then ``yᵀCy = 1`` and that is the error of each
    risk contribution); raises ``AllocationError`` if ``max_iter`` is reached, or
    on bad input: not square, not symmetric, not positive semidefinite, an asset
    with zero variance, or budgets that are not positive or do not sum to 1.

    A singular covariance is accepted when a solution exists; when some long-only
    mix of assets has zero variance none does, and that is reported as such.
    """
    sigma = validate_covariance(cov)
    n = sigma.shape[0]
    b = validate_budgets(budgets, n)
    if not (tol > 0 and np.isfinite(tol)):
        raise AllocationError(f"tol must be a positive number; got {tol!r}.")
    if max_iter < 1:
        raise AllocationError(f"max_iter must be at least 1; got {max_iter!r}.")
    vol = np.sqrt(np.diag(sigma))
    if np.any(vol <= 0):
        i = int(np.argmin(vol))
        raise AllocationError(
            f"Asset {i} has zero variance; risk parity needs every asset to carry some risk."
        )
    if n == 1:
        return np.ones(1)
    corr = sigma / np.outer(vol, vol)
    # Scaling F by 1/min(b) makes it self-concordant (each b_i/min(b) >= 1), so
    # Spinu's damped step keeps y > 0 and decreases F without a line search.
    sc = 1.0 / float(np.sqrt(b.min()))
    y = np.sqrt(b)  # the solution when C = I
    residual = np.inf
    for _ in range(max_iter):
        cy = corr @ y
        residual = float(np.max(np.abs(y * cy - b)))
        if residual <= tol:
            break
        grad = cy - b / y
        # Positive definite even when C is singular: the barrier adds diag(b/y²) > 0.
        hess = corr + np.diag(b / (y * y))
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            step = np.full(n, np.nan)
        if not np.all(np.isfinite(step)):
            raise _no_solution(y, corr, "failed numerically")
        decrement = sc * float(np.sqrt(max(float(grad @ step), 0.0)))
        t = 1.0 if decrement < _FULL_STEP_DECREMENT else 1.0 / (1.0 + decrement)
        while np.any(y - t * step <= 0):  # never needed in exact arithmetic; a guard
            t /= 2.0
        y = y - t * step
    else:
        residual = float(np.max(np.abs(y * (corr @ y) - b)))
        if residual > tol:
            raise _no_solution(
                y, corr, f"did not converge in {max_iter} iterations (largest "
                f"risk-contribution error {residual:.3g} > tol {tol:g})",
            )
    w = y / vol
    out: FloatArray = w / w.sum()
    return out


def _no_solution(y: FloatArray, corr: FloatArray, what: str) -> AllocationError:
    """The error for a failed solve: a degenerate covariance if that is the cause."""
    x = y / y.sum() if np.all(np.isfinite(y)) and y.sum() > 0 else None
    # With no solution F is unbounded below: y runs off along a long-only direction
    # of (near) zero variance, which shows as a normalised portfolio variance ~ 0.
    if x is not None and float(x @ corr @ x) < 1e-9:
        return AllocationError(
            "No risk parity portfolio exists: a long-only mix of these assets has "
            "(almost) zero variance, so the covariance is too singular."
        )
    return AllocationError(f"Risk parity {what}; the covariance may be too ill-conditioned.")


def cap_weights(weights: ArrayLike, max_per_asset: float) -> FloatArray:
    """Cap each weight at ``max_per_asset``, giving the excess pro rata to the others.

    The excess of every weight above the cap is set free and shared among the
    uncapped assets in proportion to their weights; that can push some of them
    over the cap in turn, so this repeats until none exceeds it (at most ``n``
    rounds: each caps at least one more asset). The total is kept when it can be.

    When it cannot, the leftover stays **unallocated** and the result sums to less
    than the input: if ``n × max_per_asset < 1`` every asset ends at the cap, and
    uncapped assets with weight 0 receive nothing (pro rata to zero is zero).
    """
    w = _vector(weights, "The weights").copy()
    if np.any(w < 0):
        raise AllocationError("Weights must be non-negative (long only).")
    if not (0 < max_per_asset <= 1) or not np.isfinite(max_per_asset):
        raise AllocationError(f"max_per_asset must be in (0, 1]; got {max_per_asset!r}.")
    cap = float(max_per_asset)
    capped = np.zeros(w.size, dtype=bool)
    slack = cap * 1e-12  # redistribution rounding must not count as a breach
    for _ in range(w.size):
        over = w > cap + slack
        if not over.any():
            break
        excess = float((w[over] - cap).sum())
        w[over] = cap
        capped |= over
        free = ~capped & (w > 0)
        if not free.any():
            break  # nobody can take the excess: it stays unallocated
        w[free] += excess * w[free] / w[free].sum()
    out: FloatArray = np.minimum(w, cap)
    return out


def needs_rebalance(current: ArrayLike, target: ArrayLike, threshold: float) -> bool:
    """True when any weight drifts from its target by more than ``threshold``."""
    cur = _vector(current, "The current weights")
    tgt = _vector(target, "The target weights")
    if cur.shape != tgt.shape:
        raise AllocationError(
            f"There are {cur.size} current weights but {tgt.size} target weights."
        )
    if not (threshold >= 0) or not np.isfinite(threshold):
        raise AllocationError(f"The rebalance threshold must be >= 0; got {threshold!r}.")
    return bool(np.any(np.abs(cur - tgt) > threshold))


def allocate_capital(
    capital: Decimal,
    weights: ArrayLike | Sequence[Any],
    quantum: Decimal = CENT,
) -> list[Decimal]:
    """Split ``capital`` by ``weights`` into amounts rounded **down** to ``quantum``.

    Each amount is ``capital × w_i`` computed in ``Decimal`` and truncated to
    ``quantum`` (a cent by default), so the total never exceeds ``capital``; what
    rounding leaves over (less than one quantum per asset), and whatever the
    weights leave (when they sum to less than 1), stays unallocated. A float weight
    enters as its shortest decimal form (``0.3``, not 0.29999999999999998...), so a
    30% weight of 10000 is 3000.00; should those decimals sum above 1, cents are
    taken back from the largest amounts. Weights must be non-negative and sum to at
    most 1 (within 1e-9; a sum just above 1 is scaled down to 1).
    """
    if not isinstance(capital, Decimal):
        raise AllocationError(
            f"capital must be a Decimal, not {type(capital).__name__} (money is never float)."
        )
    if not capital.is_finite() or capital < 0:
        raise AllocationError(f"capital must be a finite amount >= 0; got {capital}.")
    if not isinstance(quantum, Decimal) or not quantum.is_finite() or quantum <= 0:
        raise AllocationError(f"quantum must be a positive Decimal; got {quantum!r}.")
    w = _vector(weights, "The weights")
    if np.any(w < 0):
        raise AllocationError("Weights must be non-negative (long only).")
    if float(w.sum()) > 1.0 + BUDGET_SUM_TOL:
        raise AllocationError(f"Weights must sum to at most 1; they sum to {float(w.sum()):.12g}.")
    if float(w.sum()) > 1.0:
        w = w / float(w.sum())
    with localcontext() as ctx:
        # Enough digits that capital × weight (a float's repr: <= 17 digits) is exact
        # and the result fits its quantum; rounding, if any, still goes towards zero.
        ctx.prec = max(ctx.prec, len(capital.as_tuple().digits) + 20,
                       capital.adjusted() + 1 - quantum.adjusted() + 2)  # fmt: skip
        ctx.rounding = ROUND_FLOOR
        amounts = [
            (capital * Decimal(repr(float(wi)))).quantize(quantum, rounding=ROUND_DOWN)
            for wi in w
        ]
        # The weights' decimals may sum a hair above 1; truncation almost always
        # absorbs that, and this makes "never above capital" a guarantee.
        while sum(amounts, Decimal(0)) > capital:
            i = max(range(len(amounts)), key=amounts.__getitem__)
            amounts[i] -= quantum
    return amounts
