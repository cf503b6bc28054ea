"""Trading layer: users, sessions, audit log, config, statistics, portfolios, assets,
orders, positions (seed 003; models in ``plugins/trading/models.py``).

Portable types, as in the models: amounts NUMERIC(38, 18), TIMESTAMPTZ, JSON,
enums as VARCHAR + CHECK (no CREATE TYPE to alter later).

The root of aaa's own Alembic branch (``branch_labels``): aaa owns ``users``,
``sessions`` and ``audit_log``, and every other table here hangs off ``users`` by a
foreign key (portfolios -> assets -> orders, positions), so the nine tables are one unit.
The plugins that use them (broker, core, pipeline) require aaa (their plugin.json);
capital_pool, which writes ``audit_log``, reaches this revision through ``depends_on``.

Revision ID: 0003
Revises:
Depends on: 0001
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import SchemaItem

revision: str = "0003"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("aaa",)
depends_on: str | Sequence[str] | None = "0001"

_MONEY = sa.Numeric(38, 18)
_WHEN = sa.DateTime(timezone=True)


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


_ORDER_STATUS = _enum(
    "order_status", "new", "submitted", "partially_filled", "filled", "cancelled", "rejected"
)


def _id(table: str) -> list[SchemaItem]:
    return [
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    ]


def _fk(table: str, column: str, target: str, ondelete: str | None = None) -> SchemaItem:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
    )


def _index(table: str, *columns: str, name: str | None = None) -> None:
    op.create_index(name or op.f(f"ix_{table}_{columns[0]}"), table, list(columns))


def upgrade() -> None:
    """Create the nine tables, their constraints and indexes."""
    op.create_table(
        "users",
        *_id("users"),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", _enum("role", "admin", "member", "viewer"), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_at", _WHEN, nullable=True),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "sessions",
        *_id("sessions"),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
        sa.Column("revoked_at", _WHEN, nullable=True),
        _fk("sessions", "user_id", "users", ondelete="CASCADE"),
        sa.UniqueConstraint("token", name=op.f("uq_sessions_token")),
    )
    _index("sessions", "user_id")
    op.create_table(
        "audit_log",
        *_id("audit_log"),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("timestamp", _WHEN, nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        _fk("audit_log", "user_id", "users", ondelete="SET NULL"),
    )
    for column in ("user_id", "action", "timestamp"):
        _index("audit_log", column)
    op.create_table(
        "config",
        *_id("config"),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.UniqueConstraint("key", name=op.f("uq_config_key")),
    )
    op.create_table(
        "statistics",
        *_id("statistics"),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("timestamp", _WHEN, nullable=False),
    )
    _index("statistics", "key", "timestamp", name="ix_statistics_key_timestamp")
    op.create_table(
        "portfolios",
        *_id("portfolios"),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("base_currency", sa.String(16), nullable=False),
        sa.Column("capital", _MONEY, nullable=False),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        _fk("portfolios", "user_id", "users"),
        sa.UniqueConstraint("user_id", "name", name=op.f("uq_portfolios_user_id")),
    )
    _index("portfolios", "user_id")
    op.create_table(
        "assets",
        *_id("assets"),
        sa.Column("portfolio_id", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("allocated_capital", _MONEY, nullable=False),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        _fk("assets", "portfolio_id", "portfolios", ondelete="CASCADE"),
        sa.UniqueConstraint("portfolio_id", "symbol", name=op.f("uq_assets_portfolio_id")),
    )
    _index("assets", "portfolio_id")
    op.create_table(
        "orders",
        *_id("orders"),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("portfolio_id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("side", _enum("order_side", "buy", "sell"), nullable=False),
        sa.Column("order_type", _enum("order_type", "market", "limit"), nullable=False),
        sa.Column("quantity", _MONEY, nullable=False),
        sa.Column("price", _MONEY, nullable=True),
        sa.Column("stop_loss", _MONEY, nullable=True),
        sa.Column("take_profit", _MONEY, nullable=True),
        sa.Column("status", _ORDER_STATUS, nullable=False),
        sa.Column("filled_quantity", _MONEY, nullable=False),
        sa.Column("average_fill_price", _MONEY, nullable=True),
        sa.Column("broker_order_id", sa.String(128), nullable=True),
        sa.Column("broker_response", sa.JSON(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        _fk("orders", "portfolio_id", "portfolios"),
        _fk("orders", "asset_id", "assets"),
        sa.UniqueConstraint("client_order_id", name=op.f("uq_orders_client_order_id")),
    )
    for column in ("portfolio_id", "asset_id", "status"):
        _index("orders", column)
    op.create_table(
        "positions",
        *_id("positions"),
        sa.Column("portfolio_id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("side", _enum("position_side", "long", "short"), nullable=False),
        sa.Column("quantity", _MONEY, nullable=False),
        sa.Column("entry_price", _MONEY, nullable=False),
        sa.Column("stop_loss", _MONEY, nullable=True),
        sa.Column("take_profit", _MONEY, nullable=True),
        sa.Column("realized_pnl", _MONEY, nullable=False),
        sa.Column("opened_at", _WHEN, nullable=False),
        sa.Column("closed_at", _WHEN, nullable=True),
        _fk("positions", "portfolio_id", "portfolios"),
        _fk("positions", "asset_id", "assets"),
    )
    for column in ("portfolio_id", "asset_id"):
        _index("positions", column)


def downgrade() -> None:
    """Drop the trading tables, dependents first."""
    for table in (
        "positions",
        "orders",
        "assets",
        "portfolios",
        "statistics",
        "config",
        "audit_log",
        "sessions",
        "users",
    ):
        op.drop_table(table)
