"""SQLAlchemy models of the capital ledger (migrations ``0002_capital_pool``, ``0004``,
``0007_ledger_mac``).

``contributions``, ``withdrawals`` and ``pool_state`` keep the seed's names; the rest
are prefixed ``capital_``. ``capital_ledger`` is append-only (a trigger refuses UPDATE,
DELETE and TRUNCATE) and hash-chained (``chain.py``); every other table is derived from
it and checked against it by ``Ledger.verify``. Idempotency keys belong to their
member (or operator): they are unique per ``(user_id, key)``, never globally.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MONEY = Numeric(20, 2)
UNITS = Numeric(28, 8)


class CapitalBase(DeclarativeBase):
    metadata = MetaData()


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class PoolState(CapitalBase):
    """The pool's balances: one row (``id = 1``), locked by every mutation."""

    __tablename__ = "pool_state"
    __table_args__ = (
        CheckConstraint("id = 1", name="pool_state_single_row"),
        CheckConstraint("cash >= 0 AND active >= 0 AND units >= 0", name="pool_state_nonneg"),
        CheckConstraint("equity = cash + active", name="pool_state_equity"),
    )

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    equity: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    cash: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    active: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    units: Mapped[Decimal] = mapped_column(UNITS, nullable=False)
    #: ``seq`` of the last ledger entry applied.
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: ``hash`` of the last ledger entry (``chain.GENESIS`` while the ledger is empty).
    head_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    updated_at: Mapped[datetime] = _created()


class Member(CapitalBase):
    """A member's units and totals."""

    __tablename__ = "capital_members"
    __table_args__ = (CheckConstraint("units >= 0", name="capital_members_units_nonneg"),)

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    units: Mapped[Decimal] = mapped_column(UNITS, nullable=False)
    contributed: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    withdrawn: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class _Movement:
    """Money in or out: the amount, the units it moved and the NAV, once per member's key."""

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    units: Mapped[Decimal] = mapped_column(UNITS, nullable=False)
    nav: Mapped[Decimal] = mapped_column(Numeric(30, 10), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = _created()


class Contribution(_Movement, CapitalBase):
    """The seed's ``contributions``: money in, with the units it bought and the NAV."""

    __tablename__ = "contributions"
    __table_args__ = (UniqueConstraint("user_id", "idempotency_key",
                                       name="uq_contributions_user_id"),)  # fmt: skip


class Withdrawal(_Movement, CapitalBase):
    """The seed's ``withdrawals``: money out, with the units it redeemed and the NAV."""

    __tablename__ = "withdrawals"
    __table_args__ = (UniqueConstraint("user_id", "idempotency_key",
                                       name="uq_withdrawals_user_id"),)  # fmt: skip


class Allocation(CapitalBase):
    """A per-trade allocation published on ``capital_data`` (outbox: ``published``)."""

    __tablename__ = "capital_allocations"
    __table_args__ = (
        Index("capital_allocations_open", "status", "created_at"),
        Index("capital_allocations_unpublished", "published",
              postgresql_where="NOT published"),
    )  # fmt: skip

    allocation_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    risk_per_trade: Mapped[Decimal] = mapped_column(Numeric(12, 8), nullable=False)
    phase: Mapped[str] = mapped_column(String(64), nullable=False)
    vix: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    #: open, closed (a trading result came), released (expired unused).
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    published: Mapped[bool] = mapped_column(Boolean, nullable=False)
    created_at: Mapped[datetime] = _created()
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TradeResult(CapitalBase):
    """A trading result applied to the pool, once per ``trade_id``."""

    __tablename__ = "capital_trade_results"

    trade_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    allocation_id: Mapped[str | None] = mapped_column(String(200))
    profit: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    quantity: Mapped[Decimal] = mapped_column(Numeric(38, 12), nullable=False)
    price: Mapped[Decimal] = mapped_column(Numeric(38, 12), nullable=False)
    stream_entry: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()


class LedgerEntry(CapitalBase):
    """One change of the pool: its deltas, the balances after it, its idempotency key,
    and its link in the hash chain (``prev_hash``, ``hash``; see ``chain.py``)."""

    __tablename__ = "capital_ledger"
    __table_args__ = (
        # A member's key is unique for that member; a pool entry's (trade:, allocate:,
        # release:) is unique among pool entries.
        UniqueConstraint("user_id", "idempotency_key", name="uq_capital_ledger_user_id"),
        Index("capital_ledger_pool_key", "idempotency_key", unique=True,
              postgresql_where=text("user_id IS NULL")),
        # No two entries follow the same one: the chain cannot fork.
        UniqueConstraint("prev_hash", name="uq_capital_ledger_prev_hash"),
    )  # fmt: skip

    #: Written by the ledger under the pool lock: the previous entry's ``seq`` + 1.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(220), nullable=False)
    #: contribute, withdraw, trade_result, allocate, release.
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    user_id: Mapped[str | None] = mapped_column(String(128), index=True)
    ref: Mapped[str | None] = mapped_column(String(200))
    cash_delta: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    active_delta: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    units_delta: Mapped[Decimal] = mapped_column(UNITS, nullable=False)
    equity_after: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    cash_after: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    active_after: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    units_after: Mapped[Decimal] = mapped_column(UNITS, nullable=False)
    created_at: Mapped[datetime] = _created()
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    #: HMAC-SHA256 under the ledger key (``chain.entry_mac``); NULL only on entries of
    #: the legacy range (written before migration ``0007_ledger_mac``), which a seal covers.
    mac: Mapped[str | None] = mapped_column(String(64))


class LedgerSeal(CapitalBase):
    """The legacy range (``kind = 'legacy'``, written once by migration ``0007_ledger_mac``)
    and the operators' seals of it (``kind = 'seal'``, ``corec capital seal``); see
    ``seal.py``. Append-only."""

    __tablename__ = "capital_ledger_seals"
    __table_args__ = (CheckConstraint("kind IN ('legacy', 'seal')",
                                      name="capital_ledger_seals_kind"),)  # fmt: skip

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    through_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    head_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    key_id: Mapped[str | None] = mapped_column(String(16))
    mac: Mapped[str | None] = mapped_column(String(64))
    sealed_by: Mapped[str | None] = mapped_column(String(220))
    created_at: Mapped[datetime] = _created()


class Action(CapitalBase):
    """The first result of each action key (accepted or rejected), replayed on repeat.

    A key belongs to its ``owner``: the member's ``user_id`` for a member's action,
    ``operator/<principal>`` for an operator's (``/`` is never in a user_id), so one
    member's key neither blocks nor reveals another's.
    """

    __tablename__ = "capital_actions"

    owner: Mapped[str] = mapped_column(String(140), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(220), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    user_id: Mapped[str | None] = mapped_column(String(128))
    amount: Mapped[Decimal | None] = mapped_column(MONEY)
    ok: Mapped[bool] = mapped_column(Boolean, nullable=False)
    result: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _created()


__all__ = [
    "Action",
    "Allocation",
    "CapitalBase",
    "Contribution",
    "LedgerEntry",
    "LedgerSeal",
    "Member",
    "PoolState",
    "TradeResult",
]
