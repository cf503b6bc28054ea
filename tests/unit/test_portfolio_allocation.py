"""The portfolio plugin's allocation math: plain functions, no service."""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from corec_tasks.errors import CorecError
from plugins.portfolio.allocation import (
    AllocationError,
    allocate_capital,
    cap_weights,
    equal_weight,
    needs_rebalance,
    risk_contributions,
    risk_parity,
)

# A published reference: the "tricky example" of the riskparityportfolio package's tests
# (convexfi/riskparity.py, Cardoso & Palomar): these budgets and this covariance give
# [0.2798628, 0.08774909, 0.63238811], i.e. these weights to 5 decimals.
REF_COV = [[1.0, 0.0015, -0.0119], [0.0015, 1.0, -0.0308], [-0.0119, -0.0308, 1.0]]
REF_BUDGETS = [0.1594, 0.0126, 0.8280]
REF_WEIGHTS = [0.27986, 0.08775, 0.63239]
REF_WEIGHTS_PUBLISHED = [0.2798628, 0.08774909, 0.63238811]

# Four assets, unequal volatilities and unequal correlations.
VOLS = np.array([0.10, 0.20, 0.15, 0.30])
CORR = np.array([
    [1.0, 0.8, 0.2, -0.1],
    [0.8, 1.0, 0.5, 0.3],
    [0.2, 0.5, 1.0, 0.6],
    [-0.1, 0.3, 0.6, 1.0],
])  # fmt: skip
COV4 = CORR * np.outer(VOLS, VOLS)


def random_spd(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random covariance: random factors, a ridge, random volatilities."""
    a = rng.normal(size=(n, n))
    vols = rng.uniform(0.05, 0.8, size=n)
    corr_like = a @ a.T / n + 0.05 * np.eye(n)
    out: np.ndarray = corr_like * np.outer(vols, vols)
    return out


# -- equal weight -------------------------------------------------------------------------


def test_equal_weight() -> None:
    assert equal_weight(4).tolist() == [0.25] * 4
    assert equal_weight(1).tolist() == [1.0]
    assert equal_weight(np.int64(3)).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("n", [0, -2, 2.5, True, "3"])
def test_equal_weight_rejects_bad_counts(n: Any) -> None:
    with pytest.raises(AllocationError, match="positive integer"):
        equal_weight(n)


# -- risk parity --------------------------------------------------------------------------


def test_allocation_error_is_a_value_error_and_a_corec_error() -> None:
    assert issubclass(AllocationError, ValueError)
    assert issubclass(AllocationError, CorecError)


def test_risk_parity_matches_the_published_reference() -> None:
    w = risk_parity(REF_COV, REF_BUDGETS)
    assert np.round(w, 5).tolist() == REF_WEIGHTS
    assert w == pytest.approx(REF_WEIGHTS_PUBLISHED, rel=1e-6)
    assert risk_contributions(w, REF_COV) == pytest.approx(REF_BUDGETS, abs=1e-9)


def test_equal_risk_contributions_with_unequal_correlations() -> None:
    w = risk_parity(COV4)
    rc = risk_contributions(w, COV4)
    assert np.all(w > 0)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.max(np.abs(rc - 0.25)) < 1e-6
    # True ERC, not inverse volatility: with unequal correlations they differ.
    inverse_vol = (1 / VOLS) / (1 / VOLS).sum()
    assert np.max(np.abs(w - inverse_vol)) > 0.01
    assert np.max(np.abs(risk_contributions(inverse_vol, COV4) - 0.25)) > 0.01


def test_two_assets_is_inverse_volatility_whatever_the_correlation() -> None:
    for rho in (-0.9, 0.0, 0.7):
        cov = [[0.04, rho * 0.2 * 0.5], [rho * 0.2 * 0.5, 0.25]]
        assert risk_parity(cov) == pytest.approx([0.5 / 0.7, 0.2 / 0.7], abs=1e-10)


@pytest.mark.parametrize("n", [2, 3, 10, 50, 120])
def test_equal_risk_contributions_on_random_covariances(n: int) -> None:
    rng = np.random.default_rng(1000 + n)
    for _ in range(3):
        cov = random_spd(rng, n)
        w = risk_parity(cov)
        assert np.all(w > 0) and w.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.max(np.abs(risk_contributions(w, cov) - 1 / n)) < 1e-6


@st.composite
def covariances_and_budgets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(2, 8))
    unit = st.floats(-1, 1, allow_nan=False, allow_infinity=False)
    factors = draw(arrays(np.float64, (n, n), elements=unit))
    ridge = draw(st.floats(1e-3, 1.0))
    vols = draw(arrays(np.float64, n, elements=st.floats(0.01, 2.0)))
    raw = draw(arrays(np.float64, n, elements=st.floats(0.01, 1.0)))
    cov = (factors @ factors.T + ridge * np.eye(n)) * np.outer(vols, vols)
    return cov, raw / raw.sum()


@settings(max_examples=150, deadline=None, derandomize=True)
@given(covariances_and_budgets())
def test_risk_contributions_match_budgets_property(case: tuple[np.ndarray, np.ndarray]) -> None:
    cov, budgets = case
    for b in (None, budgets):
        w = risk_parity(cov, b)
        target = np.full(len(cov), 1 / len(cov)) if b is None else b
        assert np.all(w > 0) and w.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.max(np.abs(risk_contributions(w, cov) - target)) < 1e-6


def test_risk_parity_is_scale_free() -> None:
    assert risk_parity(COV4 * 1e4) == pytest.approx(risk_parity(COV4), abs=1e-12)
    assert risk_parity(COV4 * 1e-6) == pytest.approx(risk_parity(COV4), abs=1e-12)


def test_single_asset_takes_everything() -> None:
    assert risk_parity([[0.09]]).tolist() == [1.0]


def test_singular_covariance_with_a_solution_is_accepted() -> None:
    # Two copies of one asset: singular, yet half each is the ERC portfolio.
    assert risk_parity([[1.0, 1.0], [1.0, 1.0]]) == pytest.approx([0.5, 0.5])


@pytest.mark.parametrize("cov", [
    [[1.0, -1.0], [-1.0, 1.0]],                          # a perfect hedge: zero variance
    [[4.0, -2.0, 0.0], [-2.0, 1.0, 0.0], [0.0, 0.0, 1.0]],  # 1 of A + 2 of B is riskless
])  # fmt: skip
def test_degenerate_covariance_has_no_solution(cov: list[list[float]]) -> None:
    with pytest.raises(AllocationError, match="No risk parity portfolio exists"):
        risk_parity(cov)


def test_slight_asymmetry_from_rounding_is_accepted() -> None:
    cov = COV4.copy()
    cov[0, 1] += 1e-12
    assert np.max(np.abs(risk_contributions(risk_parity(cov), COV4) - 0.25)) < 1e-6


@pytest.mark.parametrize(("cov", "budgets", "message"), [
    ([[1.0, 0.0]], None, "square"),
    ([1.0, 0.5], None, "square"),
    ([], None, "square"),
    ([[1.0, 0.0], [0.0]], None, "matrix"),
    ([["a", 0.0], [0.0, 1.0]], None, "matrix"),
    ([[1.0, float("nan")], [float("nan"), 1.0]], None, "finite"),
    ([[1.0, float("inf")], [0.0, 1.0]], None, "finite"),
    ([[1.0, 0.5], [0.4, 1.0]], None, "not symmetric"),
    ([[1.0, 2.0], [2.0, 1.0]], None, "not positive semidefinite"),
    ([[-1.0, 0.0], [0.0, 1.0]], None, "not positive semidefinite"),
    ([[1.0, 0.0], [0.0, 0.0]], None, "Asset 1 has zero variance"),
    (REF_COV, [0.5, 0.5], "2 risk budgets for 3 assets"),
    (REF_COV, [0.5, 0.6, -0.1], "positive"),
    (REF_COV, [0.5, 0.5, 0.0], "positive"),
    (REF_COV, [0.3, 0.3, 0.3], "sum to 1"),
    (REF_COV, [0.2, 0.2, 0.6 + 1e-8], "sum to 1"),
    (REF_COV, [[0.5, 0.5, 0.0]], "one-dimensional"),
    (REF_COV, [0.5, float("nan"), 0.5], "finite"),
])  # fmt: skip
def test_risk_parity_rejects_bad_input(cov: Any, budgets: Any, message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        risk_parity(cov, budgets)


def test_budgets_summing_to_one_within_1e_9_are_accepted() -> None:
    w = risk_parity(REF_COV, [0.1594, 0.0126, 0.8280 + 5e-10])
    assert np.round(w, 5).tolist() == REF_WEIGHTS


def test_risk_parity_says_when_it_runs_out_of_iterations() -> None:
    with pytest.raises(AllocationError, match="did not converge in 1 iterations"):
        risk_parity(COV4, max_iter=1)
    with pytest.raises(AllocationError, match="tol"):
        risk_parity(COV4, tol=0)


def test_risk_contributions_sum_to_one_and_check_shapes() -> None:
    assert risk_contributions([0.2, 0.3, 0.1, 0.4], COV4).sum() == pytest.approx(1.0)
    with pytest.raises(AllocationError, match="shape"):
        risk_contributions([0.5, 0.5], COV4)


# -- caps ---------------------------------------------------------------------------------


def test_cap_redistributes_pro_rata() -> None:
    assert cap_weights([0.5, 0.3, 0.2], 0.4) == pytest.approx([0.4, 0.36, 0.24], abs=1e-15)


def test_cap_repeats_until_none_exceeds() -> None:
    # Round 1: 0.25 goes to 0.3 and 0.1 (3:1) -> 0.4875 is over; round 2 caps it too.
    assert cap_weights([0.6, 0.3, 0.1], 0.35) == pytest.approx([0.35, 0.35, 0.3], abs=1e-15)


def test_cap_below_one_over_n_leaves_the_rest_unallocated() -> None:
    out = cap_weights([0.5, 0.3, 0.2], 0.25)
    assert out == pytest.approx([0.25, 0.25, 0.25], abs=1e-15)
    assert out.sum() == pytest.approx(0.75)


def test_cap_gives_nothing_to_zero_weights() -> None:
    out = cap_weights([0.9, 0.0, 0.1], 0.5)
    assert out == pytest.approx([0.5, 0.0, 0.5], abs=1e-15)
    assert cap_weights([0.9, 0.0], 0.5) == pytest.approx([0.5, 0.0])


def test_cap_at_or_above_every_weight_changes_nothing() -> None:
    assert cap_weights([0.25, 0.75], 1.0).tolist() == [0.25, 0.75]
    assert cap_weights([0.4, 0.6], 0.6).tolist() == [0.4, 0.6]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    arrays(np.float64, st.integers(1, 12), elements=st.floats(0.001, 1.0)),
    st.floats(0.01, 1.0),
)
def test_cap_properties(raw: np.ndarray, cap: float) -> None:
    w = raw / raw.sum()
    out = cap_weights(w, cap)
    assert np.all(out <= cap) and np.all(out >= 0)
    assert out.sum() <= w.sum() + 1e-12
    if cap * len(w) >= 1:
        assert out.sum() == pytest.approx(w.sum(), abs=1e-12)
    below = out < cap * (1 - 1e-9)
    if below.sum() >= 2:  # the uncapped keep their proportions
        ratio = out[below] / w[below]
        assert ratio == pytest.approx(np.full(below.sum(), ratio[0]), rel=1e-9)


@pytest.mark.parametrize(("weights", "cap", "message"), [
    ([0.5, 0.5], 0.0, "max_per_asset"),
    ([0.5, 0.5], 1.5, "max_per_asset"),
    ([0.5, 0.5], float("nan"), "max_per_asset"),
    ([0.6, -0.1, 0.5], 0.5, "non-negative"),
    ([], 0.5, "non-empty"),
])  # fmt: skip
def test_cap_rejects_bad_input(weights: Any, cap: float, message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        cap_weights(weights, cap)


# -- rebalance ----------------------------------------------------------------------------


def test_needs_rebalance() -> None:
    target = [0.25, 0.25, 0.5]
    assert needs_rebalance([0.25, 0.25, 0.5], target, 0.0) is False
    assert needs_rebalance([0.30, 0.22, 0.48], target, 0.05) is False
    assert needs_rebalance([0.31, 0.20, 0.49], target, 0.05) is True
    # Exactly at the threshold is not over it (binary-exact numbers, no rounding).
    assert needs_rebalance([0.125, 0.25, 0.625], [0.25, 0.25, 0.5], 0.125) is False


@pytest.mark.parametrize(("current", "threshold", "message"), [
    ([0.5, 0.5], 0.05, "2 current weights but 3 target"),
    ([0.25, 0.25, 0.5], -0.1, "threshold"),
    ([0.25, 0.25, 0.5], float("nan"), "threshold"),
])  # fmt: skip
def test_needs_rebalance_rejects_bad_input(current: Any, threshold: float, message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        needs_rebalance(current, [0.25, 0.25, 0.5], threshold)


# -- capital ------------------------------------------------------------------------------


def test_amounts_are_decimal_cents_rounded_down() -> None:
    amounts = allocate_capital(Decimal("1000"), equal_weight(3))
    assert amounts == [Decimal("333.33")] * 3
    assert all(isinstance(a, Decimal) and a.as_tuple().exponent == -2 for a in amounts)


def test_round_weights_give_round_amounts() -> None:
    # 0.3 is 0.29999999999999998... in binary; the shortest decimal is what is meant.
    amounts = allocate_capital(Decimal("10000"), [0.3, 0.3, 0.4])
    assert amounts == [Decimal("3000.00"), Decimal("3000.00"), Decimal("4000.00")]


def test_weights_below_one_leave_cash_unallocated() -> None:
    amounts = allocate_capital(Decimal("100.00"), cap_weights([0.5, 0.3, 0.2], 0.25))
    assert amounts == [Decimal("25.00")] * 3


def test_other_quantum_and_zero_capital() -> None:
    assert allocate_capital(Decimal("10"), [0.5, 0.5], quantum=Decimal("1")) == [5, 5]
    assert allocate_capital(Decimal("0"), [0.5, 0.5]) == [Decimal("0.00")] * 2


def test_weights_a_hair_above_one_never_spend_more_than_capital() -> None:
    amounts = allocate_capital(Decimal("100.00"), [0.5, 0.5 + 1e-10])
    assert sum(amounts) <= Decimal("100.00")
    weights = [0.1] * 10  # sums to 0.9999999999999999 in float, 1 in decimal
    assert sum(allocate_capital(Decimal("0.10"), weights)) <= Decimal("0.10")


def test_capital_beyond_the_default_decimal_precision() -> None:
    capital = Decimal("123456789012345678901234567890.55")  # 32 digits > the default 28
    amounts = allocate_capital(capital, equal_weight(3))
    assert all(a.as_tuple().exponent == -2 for a in amounts)
    with localcontext(prec=50):
        assert sum(amounts) <= capital


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.decimals(min_value=0, max_value=10**12, places=2, allow_nan=False, allow_infinity=False),
    arrays(np.float64, st.integers(1, 20), elements=st.floats(0.0, 1.0)),
)
def test_total_never_exceeds_capital(capital: Decimal, raw: np.ndarray) -> None:
    weights = raw / raw.sum() if raw.sum() > 0 else raw
    amounts = allocate_capital(capital, weights)
    total = sum(amounts, Decimal(0))
    assert total <= capital
    assert all(a >= 0 for a in amounts)
    # Each amount loses less than a cent to rounding (beyond the weights' own float error).
    for a, w in zip(amounts, weights, strict=True):
        assert capital * Decimal(repr(float(w))) - a < Decimal("0.01") + capital * Decimal("1e-15")


@pytest.mark.parametrize(("capital", "weights", "message"), [
    (1000.0, [0.5, 0.5], "Decimal, not float"),
    (1000, [0.5, 0.5], "Decimal, not int"),
    (Decimal("-1"), [0.5, 0.5], ">= 0"),
    (Decimal("NaN"), [0.5, 0.5], "finite"),
    (Decimal("Infinity"), [0.5, 0.5], "finite"),
    (Decimal("100"), [0.7, 0.7], "at most 1"),
    (Decimal("100"), [1.2, -0.2], "non-negative"),
    (Decimal("100"), [], "non-empty"),
])  # fmt: skip
def test_allocate_capital_rejects_bad_input(capital: Any, weights: Any, message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        allocate_capital(capital, weights)


def test_allocate_capital_rejects_a_bad_quantum() -> None:
    with pytest.raises(AllocationError, match="quantum"):
        allocate_capital(Decimal("100"), [1.0], quantum=Decimal("0"))
