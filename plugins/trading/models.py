"""The trading layer's models: seed 003's User, Session, AuditLog, Config, Statistics,
plus Portfolio, Asset, Order and Position.

One MetaData of their own (not the partitioned ``bloques``/``eventos`` of
``corec_tasks.storage``), portable types only: money is ``Money`` (exact NUMERIC),
datetimes are ``UTCDateTime``, JSON is plain JSON, enums are VARCHAR + CHECK.
PostgreSQL gets these tables from migration 0003; SQLite from ``db.create_schema``.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from corec_tasks.storage.models import NAMING_CONVENTION
from plugins.trading.types import Money, UTCDateTime, utcnow


class TradingBase(DeclarativeBase):
    """Declarative base of the trading layer (its own MetaData, CoreC's naming convention)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # VARCHAR + CHECK on every backend: no CREATE TYPE to migrate, same on SQLite.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Role(enum.StrEnum):
    """What a user may do: admin everything, member own capital, viewer read-only."""

    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


class OrderStatus(enum.StrEnum):
    """An order's lifecycle; ``TRANSITIONS`` says which moves are legal."""

    NEW = "new"
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class OrderSide(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(enum.StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class PositionSide(enum.StrEnum):
    LONG = "long"
    SHORT = "short"


#: Legal status changes; filled, cancelled and rejected are final.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.NEW: frozenset(
        {OrderStatus.SUBMITTED, OrderStatus.CANCELLED, OrderStatus.REJECTED}
    ),
    OrderStatus.SUBMITTED: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.REJECTED,
        }
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED}
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
}


class User(TradingBase):
    """A person who logs in (seed: User); ``failed_logins``/``locked_at`` drive lockout."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    portfolios: Mapped[list[Portfolio]] = relationship(back_populates="user")


class UserSession(TradingBase):
    """One login (seed: Session). ``token`` is the JWT's id (``jti``), never the JWT itself,
    so reading this table does not hand out live credentials."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


#: The seed's name for it; ``UserSession`` avoids a clash with ``sqlalchemy.orm.Session``.
Session = UserSession


class AuditLog(TradingBase):
    """One audited action (seed: AuditLog); ``details`` is JSON text.

    Append-only on PostgreSQL: a trigger (migration ``0004``) refuses UPDATE, DELETE and
    TRUNCATE, so deleting a user who has audit rows is refused too (``SET NULL`` would
    rewrite them): deactivate the user instead.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Nullable: a failed login for an unknown name or a CLI admin has no user row.
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    action: Mapped[str] = mapped_column(String(64), index=True)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    details: Mapped[str | None] = mapped_column(Text)


class Config(TradingBase):
    """A system setting (seed: Config); ``value`` is JSON or text."""

    __tablename__ = "config"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    value: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Statistics(TradingBase):
    """A recorded metric (seed: Statistics). A measurement, not money: the seed's Float."""

    __tablename__ = "statistics"
    __table_args__ = (Index("ix_statistics_key_timestamp", "key", "timestamp"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Portfolio(TradingBase):
    """A user's portfolio; ``config`` is its plugin configuration (seed §8)."""

    __tablename__ = "portfolios"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    base_currency: Mapped[str] = mapped_column(String(16), default="USD")
    capital: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship(back_populates="portfolios")
    assets: Mapped[list[Asset]] = relationship(back_populates="portfolio")


class Asset(TradingBase):
    """An instrument traded inside a portfolio, with its allocated capital and config."""

    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("portfolio_id", "symbol"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portfolio_id: Mapped[int] = mapped_column(
        ForeignKey("portfolios.id", ondelete="CASCADE"), index=True
    )
    symbol: Mapped[str] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(128))
    allocated_capital: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    portfolio: Mapped[Portfolio] = relationship(back_populates="assets")


class Order(TradingBase):
    """An order to a broker. ``client_order_id`` is ours and unique, so a retried
    submission finds the order it already made instead of making a second one."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    portfolio_id: Mapped[int] = mapped_column(ForeignKey("portfolios.id"), index=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), index=True)
    side: Mapped[OrderSide] = mapped_column(_enum(OrderSide, "order_side"))
    order_type: Mapped[OrderType] = mapped_column(_enum(OrderType, "order_type"))
    quantity: Mapped[Decimal] = mapped_column(Money)
    price: Mapped[Decimal | None] = mapped_column(Money)
    stop_loss: Mapped[Decimal | None] = mapped_column(Money)
    take_profit: Mapped[Decimal | None] = mapped_column(Money)
    status: Mapped[OrderStatus] = mapped_column(
        _enum(OrderStatus, "order_status"), default=OrderStatus.NEW, index=True
    )
    filled_quantity: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    average_fill_price: Mapped[Decimal | None] = mapped_column(Money)
    broker_order_id: Mapped[str | None] = mapped_column(String(128))
    broker_response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def transition(self, status: OrderStatus) -> None:
        """Move to ``status``; an illegal move (e.g. out of ``filled``) raises ValueError."""
        current = OrderStatus(self.status or OrderStatus.NEW)
        if status not in TRANSITIONS[current]:
            raise ValueError(
                f"order {self.client_order_id!r} cannot go from {current.value} to "
                f"{OrderStatus(status).value}"
            )
        self.status = status


class Position(TradingBase):
    """A position in an asset; open while ``closed_at`` is null."""

    __tablename__ = "positions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    portfolio_id: Mapped[int] = mapped_column(ForeignKey("portfolios.id"), index=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), index=True)
    side: Mapped[PositionSide] = mapped_column(_enum(PositionSide, "position_side"))
    quantity: Mapped[Decimal] = mapped_column(Money)
    entry_price: Mapped[Decimal] = mapped_column(Money)
    stop_loss: Mapped[Decimal | None] = mapped_column(Money)
    take_profit: Mapped[Decimal | None] = mapped_column(Money)
    realized_pnl: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


__all__ = [
    "TRANSITIONS",
    "Asset",
    "AuditLog",
    "Config",
    "Order",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "Portfolio",
    "Position",
    "PositionSide",
    "Role",
    "Session",
    "Statistics",
    "TradingBase",
    "User",
    "UserSession",
]
