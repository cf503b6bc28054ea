"""Unit accounting of the capital pool: worked examples, rules, bad input, properties."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.capital_pool import accounting as acc
from plugins.capital_pool.accounting import Holding, Pool, Rejected
from plugins.capital_pool.config import CapitalRules, MacroRules, parse_config
from plugins.capital_pool.money import CENT, AmountError, parse_amount

RULES = CapitalRules()
MACRO = MacroRules()


# -- worked examples (investment-club unit accounting) -------------------------------


def test_club_worth_5000_with_50_units_then_holdings_rise() -> None:
    pool = Pool(equity=D("5000.00"), cash=D("5000.00"), units=D("50"))
    change = acc.contribute(pool, None, D("100.00"), RULES)
    assert change.units == D("1.00000000")  # NAV 100: $100 buys one unit
    pool = acc.apply_result(change.pool, D("500.00"), None, RULES).pool
    assert pool.units == D("51")
    assert str(pool.nav).startswith("109.8039")
    assert pool.nav.quantize(D("1e-20")) == (D("5600") / D("51")).quantize(D("1e-20"))


def test_two_members_at_nav_10_gain_then_each_adds_100() -> None:
    # $4,000 and $1,000 at NAV $10: 400 and 100 units.
    a = Holding(D("400"), D("4000"), D(0))
    b = Holding(D("100"), D("1000"), D(0))
    pool = Pool(equity=D("5000.00"), cash=D("5000.00"), units=D("500"))
    assert pool.nav == D(10)
    # Holdings rise to $5,400 (the +10% on the $4,000 invested): NAV $10.80.
    pool = acc.apply_result(pool, D("400.00"), None, RULES).pool
    assert pool.nav == D("10.8")
    ca = acc.contribute(pool, a, D("100.00"), RULES)
    cb = acc.contribute(ca.pool, b, D("100.00"), RULES)
    assert ca.units == cb.units == D("9.25925925")  # 100 / 10.80, rounded down
    assert str(cb.pool.nav).startswith("10.80000000")
    assert cb.pool.nav >= D("10.8")  # rounding units down favours the pool
    assert cb.pool.value_of(cb.holding.units if cb.holding else D(0)) == D("1179.99")


def test_first_contribution_sets_nav_to_one() -> None:
    change = acc.contribute(Pool(), None, D("250.00"), RULES)
    assert change.units == D("250.00000000")
    assert change.pool.nav == D(1)


def test_withdrawal_redeems_units_rounded_up_and_never_lowers_nav() -> None:
    pool = Pool(equity=D("1000.00"), cash=D("1000.00"), units=D("300"))
    holding = Holding(D("300"), D("900"), D(0))
    change = acc.withdraw(pool, holding, D("100.00"), RULES)
    assert change.units == D("30.00000000")
    odd = acc.withdraw(pool, holding, D("0.01"), RULES)
    assert odd.units == D("0.00300000")
    third = acc.withdraw(Pool(D("700.00"), D("700.00"), D(0), D("300")), holding, D("1.00"), RULES)
    assert third.units == D("0.42857143")  # 0.428571428... rounded up
    assert third.pool.nav >= D("700") / D("300")


def test_the_last_member_can_take_everything_and_only_dust_remains() -> None:
    pool = Pool(equity=D("1000.00"), cash=D("1000.00"), units=D("333.33333333"))
    holding = Holding(D("333.33333333"), D("1000"), D(0))
    value = pool.value_of(holding.units)
    change = acc.withdraw(pool, holding, value, RULES)
    assert change.pool.units == 0
    assert D(0) <= change.pool.equity < CENT


# -- rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("equity", "phase", "risk"),
    [("99.99", None, "0"), ("100", "seed", "0.03"), ("999.99", "seed", "0.03"),
     ("1000", "growth", "0.02"), ("9999.99", "growth", "0.02"), ("10000", "mature", "0.01"),
     ("5000000", "mature", "0.01")],
)  # fmt: skip
def test_phases_by_equity(equity: str, phase: str | None, risk: str) -> None:
    got_phase, got_risk = acc.risk_per_trade(D(equity), D(15), RULES, MACRO)
    assert (got_phase.name if got_phase else None, got_risk) == (phase, D(risk))


def test_high_vix_cuts_risk_and_unknown_vix_is_treated_as_high() -> None:
    assert acc.risk_per_trade(D(5000), D(20), RULES, MACRO)[1] == D("0.02")
    assert acc.risk_per_trade(D(5000), D("20.01"), RULES, MACRO)[1] == D("0.010")
    assert acc.risk_per_trade(D(5000), None, RULES, MACRO)[1] == D("0.010")


def test_more_phases_can_be_configured() -> None:
    cfg = parse_config({"capital_config": {"phases": [
        {"name": "a", "min_equity": "100", "risk_per_trade": "0.03"},
        {"name": "b", "min_equity": "1000", "risk_per_trade": "0.02"},
        {"name": "c", "min_equity": "10000", "risk_per_trade": "0.01"},
        {"name": "d", "min_equity": "1000000", "risk_per_trade": "0.005"}]}})  # fmt: skip
    assert acc.phase_for(D(2_000_000), cfg.capital_config.phases).name == "d"  # type: ignore[union-attr]


def test_bad_phases_are_named() -> None:
    from corec_tasks.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as err:
        parse_config({"capital_config": {"phases": [
            {"name": "a", "min_equity": "1000", "risk_per_trade": "0.03"},
            {"name": "b", "min_equity": "100", "risk_per_trade": "2"}]}})  # fmt: skip
    keys = [k for k, _ in err.value.problems]
    assert "capital_config.phases.1.risk_per_trade" in keys


def test_allocation_fills_slots_up_to_60_percent() -> None:
    pool = Pool(equity=D("10000.00"), cash=D("10000.00"), units=D("10000"))
    amounts = acc.plan_allocations(pool, 0, RULES)
    assert amounts == [D("1200.00")] * 5
    for a in amounts:
        pool = acc.allocate(pool, a)
    assert pool.active == D("6000.00") == D("0.6") * pool.equity
    assert acc.plan_allocations(pool, 5, RULES) == []
    assert acc.free_cash(pool, RULES) == 0
    with pytest.raises(Rejected, match="free cash"):
        acc.withdraw(pool, Holding(D("10000"), D("10000"), D(0)), D("100.00"), RULES)


def test_no_allocation_below_the_first_phase() -> None:
    assert acc.plan_allocations(Pool(D("99.00"), D("99.00"), D(0), D(99)), 0, RULES) == []


def test_result_closing_an_allocation_returns_it_to_cash() -> None:
    pool = acc.allocate(Pool(D("1000.00"), D("1000.00"), D(0), D(1000)), D("120.00"))
    closed = acc.apply_result(pool, D("-20.00"), D("120.00"), RULES).pool
    assert (closed.cash, closed.active, closed.equity) == (D("980.00"), D(0), D("980.00"))
    with pytest.raises(Rejected, match="exceeds the capital at risk"):
        acc.apply_result(pool, D("-120.01"), D("120.00"), RULES)


@pytest.mark.parametrize(
    ("amount", "message"),
    [("50", "minimum contribution"), ("99.99", "minimum contribution"),
     ("1000000000.01", "maximum single contribution")],
)  # fmt: skip
def test_contribution_rules(amount: str, message: str) -> None:
    with pytest.raises(Rejected, match=message):
        acc.contribute(Pool(), None, D(amount), RULES)


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [("-5", "must be positive"), ("0", "must be positive"), ("0.00", "must be positive"),
     ("NaN", "not a number"), ("nan", "not a number"), ("Infinity", "not a number"),
     ("abc", "not a number"), ("", "not a number"), ("1e30", "not a number"),
     (10**18, "too large"), (float("nan"), "finite"), ("100.001", "more than 2 decimal places"),
     (None, "required"), (True, "required"), ([100], "decimal string"),
     (0.1 + 0.2, "more than 2 decimal places")],
)  # fmt: skip
def test_bad_amounts_say_why(raw: object, message: str) -> None:
    with pytest.raises(AmountError, match=message):
        parse_amount(raw)


def test_good_amounts() -> None:
    assert parse_amount("100") == D("100.00")
    assert parse_amount("100.5") == D("100.50")
    assert parse_amount(250) == D("250.00")
    assert parse_amount("1.2300") == D("1.23")  # trailing zeros are not extra precision
    with pytest.raises(AmountError, match="above the maximum"):
        parse_amount("1000000000000", maximum=D("1000000000"))


# -- properties ------------------------------------------------------------------------

USERS = ["u0", "u1", "u2", "u3"]
money = st.decimals(min_value=D("0.01"), max_value=D("50000"), places=2)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("contribute"), st.sampled_from(USERS), money),
        st.tuples(st.just("withdraw"), st.sampled_from(USERS), money),
        st.tuples(st.just("withdraw_all"), st.sampled_from(USERS), st.just(D(0))),
        st.tuples(st.just("result"), st.just(""), st.decimals(min_value=D("-5000"),
                  max_value=D("5000"), places=2)),
        st.tuples(st.just("allocate"), st.just(""), st.just(D(0))),
        st.tuples(st.just("close"), st.just(""), st.decimals(min_value=D("-1"),
                  max_value=D("1"), places=3)),
    ),
    max_size=60,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(actions)
def test_any_sequence_keeps_the_invariants(seq: list[tuple[str, str, D]]) -> None:
    """Sum of member values = equity within 1 cent per member; no negative units or
    cash; active <= 60% of equity; units = sum of holdings; rejected actions change
    nothing."""
    pool = Pool()
    holdings: dict[str, Holding] = {}
    allocations: list[D] = []
    for kind, user, amount in seq:
        before = pool
        try:
            if kind == "contribute":
                change = acc.contribute(pool, holdings.get(user), amount, RULES)
                pool, holdings[user] = change.pool, change.holding  # type: ignore[assignment]
            elif kind in ("withdraw", "withdraw_all"):
                h = holdings.get(user)
                if kind == "withdraw_all":
                    amount = min(pool.value_of(h.units) if h else D(0), acc.free_cash(pool, RULES))
                change = acc.withdraw(pool, h, amount, RULES)
                pool, holdings[user] = change.pool, change.holding  # type: ignore[assignment]
            elif kind == "result":
                pool = acc.apply_result(pool, amount, None, RULES).pool
            elif kind == "allocate":
                for a in acc.plan_allocations(pool, len(allocations), RULES):
                    pool = acc.allocate(pool, a)
                    allocations.append(a)
            elif kind == "close" and allocations:
                a = allocations.pop(0)
                profit = (a * amount).quantize(CENT)  # between -100% and +100% of it
                pool = acc.apply_result(pool, profit, a, RULES).pool
        except Rejected:
            assert pool == before
        problems = acc.check(pool, list(holdings.values()), RULES)
        assert not problems, (kind, user, amount, problems)
        assert pool.active == sum(allocations, D(0))
