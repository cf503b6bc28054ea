"""Unit (NAV) accounting: pure state transitions, no I/O.

The ledger (``ledger.py``) runs every money action through these functions under a
row lock and persists what they return; the property tests run them directly. So
the rules below are the rules, whoever calls them.

- ``equity = cash + active``; ``active`` is the part allocated to open trades.
- Members own ``units``; the pool's ``units`` is their sum. NAV per unit is
  ``equity / units``; with no units outstanding it is ``INITIAL_NAV`` (1.00).
- A contribution of ``A`` buys ``floor8(A * units / equity)`` units (``A / 1.00``
  for the first), so NAV is unchanged up to rounding, which favours the pool.
- A withdrawal of ``A`` redeems ``ceil8(A * units / equity)`` units; it is limited
  to the member's value (``floor2(member_units * NAV)``) and to free cash
  (``floor2(equity - active / max_active_ratio)``, so ``active`` stays within its cap).
- A trading result moves equity (and so every member's value, pro rata). A result
  for an allocation closes it: its amount returns from ``active`` to ``cash`` with the
  profit. A loss may not exceed the capital at risk (the allocation, or free cash).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from plugins.capital_pool.config import CapitalRules, MacroRules, Phase
from plugins.capital_pool.money import (
    CENT,
    ZERO,
    ceil_units,
    div,
    floor_cents,
    floor_units,
    money_str,
    mul,
)

INITIAL_NAV = Decimal("1.00")


class Rejected(Exception):
    """A business rule refused an action; ``str()`` is a sentence for the member."""


@dataclass(frozen=True, slots=True)
class Pool:
    """The pool's balances: money to the cent, units to 1e-8."""

    equity: Decimal = ZERO
    cash: Decimal = ZERO
    active: Decimal = ZERO
    units: Decimal = ZERO

    @property
    def nav(self) -> Decimal:
        """NAV per unit, unrounded (40 significant digits)."""
        return div(self.equity, self.units) if self.units > 0 else INITIAL_NAV

    def value_of(self, units: Decimal) -> Decimal:
        """What ``units`` are worth now, rounded down to the cent."""
        if units <= 0 or self.units <= 0:
            return ZERO
        return floor_cents(div(mul(units, self.equity), self.units))


@dataclass(frozen=True, slots=True)
class Holding:
    """One member's units and the money they put in and took out."""

    units: Decimal = ZERO
    contributed: Decimal = ZERO
    withdrawn: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class Change:
    """What an action did: the new balances and the units it moved."""

    pool: Pool
    holding: Holding | None
    units: Decimal = ZERO


def free_cash(pool: Pool, rules: CapitalRules) -> Decimal:
    """Cash that can leave the pool now without pushing ``active`` above its cap."""
    headroom = pool.equity - div(pool.active, rules.max_active_ratio)
    return max(ZERO, min(pool.cash, floor_cents(headroom)))


def contribute(pool: Pool, holding: Holding | None, amount: Decimal, rules: CapitalRules) -> Change:
    """Buy units for ``amount`` at the current NAV."""
    if amount < rules.min_contribution:
        raise Rejected(
            f"the minimum contribution is ${money_str(rules.min_contribution)}; "
            f"got ${money_str(amount)}"
        )
    if amount > rules.max_amount:
        raise Rejected(f"the maximum single contribution is ${money_str(rules.max_amount)}")
    if pool.units > 0 and pool.equity <= 0:
        raise Rejected(
            f"the pool's equity is ${money_str(pool.equity)}, so units have no price; "
            "contributions are suspended until an operator settles the pool"
        )
    units = floor_units(div(amount, pool.nav))
    if units <= 0:
        raise Rejected(f"${money_str(amount)} buys less than 0.00000001 units at this NAV")
    h = holding or Holding()
    return Change(
        replace(pool, equity=pool.equity + amount, cash=pool.cash + amount,
                units=pool.units + units),
        Holding(h.units + units, h.contributed + amount, h.withdrawn),
        units,
    )  # fmt: skip


def withdraw(pool: Pool, holding: Holding | None, amount: Decimal, rules: CapitalRules) -> Change:
    """Redeem units worth ``amount`` at the current NAV."""
    if holding is None or holding.units <= 0:
        raise Rejected("this member holds no units in the pool")
    if amount > rules.max_amount:
        raise Rejected(f"the maximum single withdrawal is ${money_str(rules.max_amount)}")
    value = pool.value_of(holding.units)
    if amount > value:
        raise Rejected(
            f"${money_str(amount)} is more than this member's value of ${money_str(value)}"
        )
    free = free_cash(pool, rules)
    if amount > free:
        raise Rejected(
            f"only ${money_str(free)} of the pool is free cash now (the rest backs open "
            f"trades, at most {rules.max_active_ratio:%} of equity); try a smaller amount later"
        )
    units = min(holding.units, ceil_units(div(mul(amount, pool.units), pool.equity)))
    return Change(
        replace(pool, equity=pool.equity - amount, cash=pool.cash - amount,
                units=pool.units - units),
        Holding(holding.units - units, holding.contributed, holding.withdrawn + amount),
        units,
    )  # fmt: skip


def apply_result(
    pool: Pool, profit: Decimal, allocation: Decimal | None, rules: CapitalRules
) -> Change:
    """Apply a trading result; ``allocation`` is the amount of the allocation it closes."""
    if pool.units <= 0:
        raise Rejected("the pool has no members, so a trading result has no one to belong to")
    if profit != profit.quantize(CENT):
        raise ValueError("profit must be rounded to the cent before it is applied")
    released = allocation or ZERO
    at_risk = released if allocation is not None else free_cash(pool, rules)
    if -profit > at_risk:
        what = "its allocation" if allocation is not None else "the pool's free cash"
        raise Rejected(
            f"a loss of ${money_str(-profit)} exceeds the capital at risk "
            f"(${money_str(at_risk)}, {what})"
        )
    return Change(
        replace(pool, equity=pool.equity + profit, cash=pool.cash + released + profit,
                active=pool.active - released),
        None,
    )  # fmt: skip


def check_result(
    profit: Decimal, allocation_id: str | None, allocation: tuple[Decimal, str] | None,
    rules: CapitalRules,
) -> Decimal:
    """The amount of the allocation a trading result closes, if the pool may apply it;
    else ``Rejected`` saying why.

    ``allocation`` is the pool's own row for ``allocation_id``: ``(amount, status)``, or
    None if the pool never issued it. The rule (a bound no producer can lift): the
    result names an allocation the pool issued and has not closed or released, and
    ``-amount <= profit <= amount x max_profit_ratio``. A position is sized within its
    allocation (``quantity x price <= amount``), so a gain above that ratio means a
    price that moved more than ``max_profit_ratio`` within the allocation's life, or a
    result that did not come from the market.
    """
    if not allocation_id:
        raise Rejected("a trading result must name the allocation it closes "
                       "(allocation_id is missing)")  # fmt: skip
    if allocation is None:
        raise Rejected(f"allocation {allocation_id!r} was never issued by the pool")
    amount, status = allocation
    if status != "open":
        raise Rejected(f"allocation {allocation_id!r} is {status}, not open")
    limit = floor_cents(mul(amount, rules.max_profit_ratio))
    if profit > limit:
        raise Rejected(
            f"a profit of ${money_str(profit)} exceeds the bound of allocation "
            f"{allocation_id!r} (${money_str(amount)} x max_profit_ratio "
            f"{rules.max_profit_ratio} = ${money_str(limit)})"
        )
    return amount


def release(pool: Pool, amount: Decimal) -> Pool:
    """Return an expired allocation's amount from ``active`` to ``cash``."""
    return replace(pool, cash=pool.cash + amount, active=pool.active - amount)


def phase_for(equity: Decimal, phases: Sequence[Phase]) -> Phase | None:
    """The highest phase whose ``min_equity`` is at most ``equity``; None below the first."""
    current = None
    for phase in phases:
        if equity >= phase.min_equity:
            current = phase
    return current


def vix_is_high(vix: Decimal | None, macro: MacroRules) -> bool:
    """True above the threshold, and when no fresh VIX is known (the conservative side)."""
    return vix is None or vix > macro.vix_threshold


def risk_per_trade(
    equity: Decimal, vix: Decimal | None, rules: CapitalRules, macro: MacroRules
) -> tuple[Phase | None, Decimal]:
    """The phase and the risk per trade, cut by ``vix_risk_factor`` when VIX is high."""
    phase = phase_for(equity, rules.phases)
    if phase is None:
        return None, ZERO
    risk = phase.risk_per_trade
    if vix_is_high(vix, macro):
        risk = mul(risk, macro.vix_risk_factor)
    return phase, risk


def plan_allocations(pool: Pool, open_count: int, rules: CapitalRules) -> list[Decimal]:
    """Amounts of the new per-trade allocations: the active cap split into ``slots``.

    Each slot is ``floor2(max_active_ratio * equity / slots)``; free slots are filled
    while ``active`` stays within the cap. Below ``min_allocation`` nothing is allocated.
    """
    if phase_for(pool.equity, rules.phases) is None:
        return []
    cap = mul(rules.max_active_ratio, pool.equity)
    slot = floor_cents(div(cap, Decimal(rules.slots)))
    if slot <= 0 or slot < rules.min_allocation:
        return []
    room = cap - pool.active
    n = min(rules.slots - open_count, int(div(room, slot)))
    return [slot] * max(0, n)


def allocate(pool: Pool, amount: Decimal) -> Pool:
    """Move ``amount`` from ``cash`` to ``active`` (an open allocation)."""
    return replace(pool, cash=pool.cash - amount, active=pool.active + amount)


def roi(value: Decimal, contributed: Decimal, withdrawn: Decimal) -> Decimal | None:
    """Return on investment: ``(value + withdrawn - contributed) / contributed``."""
    if contributed <= 0:
        return None
    return div(value + withdrawn - contributed, contributed)


def check(pool: Pool, holdings: Sequence[Holding], rules: CapitalRules) -> list[str]:
    """Every invariant the pool must keep; returns the broken ones as sentences."""
    problems = []
    if pool.equity != pool.cash + pool.active:
        problems.append(f"equity {pool.equity} != cash {pool.cash} + active {pool.active}")
    if pool.cash < 0:
        problems.append(f"cash is negative ({pool.cash})")
    if pool.active < 0:
        problems.append(f"active is negative ({pool.active})")
    if pool.units < 0:
        problems.append(f"units are negative ({pool.units})")
    if pool.active > mul(rules.max_active_ratio, pool.equity):
        problems.append(f"active {pool.active} is above {rules.max_active_ratio} of equity")
    total = sum((h.units for h in holdings), ZERO)
    if total != pool.units:
        problems.append(f"members hold {total} units, the pool {pool.units}")
    if any(h.units < 0 for h in holdings):
        problems.append("a member holds negative units")
    values = sum((pool.value_of(h.units) for h in holdings), ZERO)
    slack = CENT * max(1, len(holdings))
    if pool.units > 0 and not pool.equity - slack < values <= pool.equity:
        problems.append(f"member values sum to {values}, equity is {pool.equity}")
    if pool.units == 0 and not ZERO <= pool.equity < CENT:
        problems.append(f"no units outstanding but equity is {pool.equity}")
    return problems
