"""The trading models on PostgreSQL (after the migrations) and on SQLite (create_schema).

PostgreSQL tests share the run's database, so each one works under its own names.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError

from corec_tasks.db import libpq_url
from corec_tasks.errors import StorageError
from corec_tasks.storage import migrate
from plugins.trading.db import create_schema, make_trading_engine, prepare, session_factory
from plugins.trading.models import (
    Asset,
    AuditLog,
    Config,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Portfolio,
    Position,
    PositionSide,
    Role,
    Statistics,
    TradingBase,
    User,
    UserSession,
)
from tests.conftest import _with_database

pytestmark = pytest.mark.integration

BIG = Decimal("12345678901234567890.123456789012345678")


@pytest.fixture()
def engine(trading_url: str) -> Iterator[Engine]:
    eng = make_trading_engine(trading_url)
    prepare(eng)
    yield eng
    eng.dispose()


def _tag() -> str:
    return uuid.uuid4().hex[:10]


def _portfolio(engine: Engine, tag: str) -> tuple[int, int, int]:
    """A user with one portfolio and one asset: their ids."""
    with session_factory(engine).begin() as db:
        user = User(username=f"u{tag}", password_hash="x", role=Role.MEMBER)
        portfolio = Portfolio(user=user, name="main", capital=BIG, config={"risk": "0.02"})
        asset = Asset(portfolio=portfolio, symbol="BTC-USD", allocated_capital=Decimal("10.5"))
        db.add_all([user, portfolio, asset])
        db.flush()
        return user.id, portfolio.id, asset.id


def test_migrations_create_the_trading_tables_as_the_models_say(
    migrated_database_url: str,
) -> None:
    assert migrate.up_to_date(migrated_database_url)
    eng = make_trading_engine(migrated_database_url)
    try:
        assert set(TradingBase.metadata.tables) <= set(inspect(eng).get_table_names())
        with eng.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_name": lambda name, kind, _p: (
                        kind != "table" or name in TradingBase.metadata.tables
                    ),
                },
            )
            assert compare_metadata(ctx, TradingBase.metadata) == []
    finally:
        eng.dispose()


def test_every_model_inserts_and_selects(engine: Engine) -> None:
    tag = _tag()
    user_id, portfolio_id, asset_id = _portfolio(engine, tag)
    opened = datetime(2025, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=-5)))
    with session_factory(engine).begin() as db:
        db.add_all(
            [
                UserSession(
                    user_id=user_id,
                    token=f"jti{tag}",
                    expires_at=datetime.now(UTC) + timedelta(hours=1),
                ),
                AuditLog(user_id=user_id, action="test", details='{"k": 1}'),
                Config(key=f"k{tag}", value='{"a": 1}'),
                Statistics(key=f"s{tag}", value=0.25),
                Order(
                    client_order_id=f"o{tag}",
                    portfolio_id=portfolio_id,
                    asset_id=asset_id,
                    side=OrderSide.BUY,
                    order_type=OrderType.LIMIT,
                    quantity=Decimal("0.001"),
                    price=Decimal("64000.12345678"),
                    broker_response={"id": "b-1"},
                ),
                Position(
                    portfolio_id=portfolio_id,
                    asset_id=asset_id,
                    side=PositionSide.LONG,
                    quantity=Decimal("1e-18"),
                    entry_price=BIG,
                    opened_at=opened,
                ),
            ]
        )
    with session_factory(engine)() as db:
        portfolio = db.get_one(Portfolio, portfolio_id)
        assert portfolio.capital == BIG and portfolio.config == {"risk": "0.02"}
        assert [a.allocated_capital for a in portfolio.assets] == [Decimal("10.5")]
        assert portfolio.user.created_at.tzinfo is UTC
        order = db.scalars(select(Order).where(Order.client_order_id == f"o{tag}")).one()
        assert order.status is OrderStatus.NEW
        assert order.price == Decimal("64000.12345678")
        assert order.filled_quantity == 0
        assert order.broker_response == {"id": "b-1"}
        position = db.scalars(select(Position).where(Position.portfolio_id == portfolio_id)).one()
        assert position.quantity == Decimal("0.000000000000000001")
        assert position.entry_price == BIG
        assert position.opened_at == opened and position.opened_at.tzinfo is UTC
        assert db.scalars(select(Config.value).where(Config.key == f"k{tag}")).one() == '{"a": 1}'
        assert db.scalars(select(Statistics.value).where(Statistics.key == f"s{tag}")).one() == 0.25
        assert db.scalars(select(AuditLog.action).where(AuditLog.user_id == user_id)).all() == [
            "test"
        ]
        assert (
            db.scalars(select(UserSession.user_id).where(UserSession.token == f"jti{tag}")).one()
            == user_id
        )


def test_client_order_id_is_unique(engine: Engine) -> None:
    tag = _tag()
    _, portfolio_id, asset_id = _portfolio(engine, tag)

    def order() -> Order:
        return Order(
            client_order_id=f"dup{tag}",
            portfolio_id=portfolio_id,
            asset_id=asset_id,
            side=OrderSide.SELL,
            order_type=OrderType.MARKET,
            quantity=Decimal(1),
        )

    with session_factory(engine).begin() as db:
        db.add(order())
    with pytest.raises(IntegrityError), session_factory(engine).begin() as db:
        db.add(order())


def test_constraints_hold_in_the_database(engine: Engine) -> None:
    tag = _tag()
    user_id, portfolio_id, _ = _portfolio(engine, tag)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE users SET role = 'root' WHERE id = :id"), {"id": user_id})
    with pytest.raises(IntegrityError), engine.begin() as conn:  # foreign keys, SQLite too
        conn.execute(
            text("UPDATE assets SET portfolio_id = -1 WHERE portfolio_id = :id"),
            {"id": portfolio_id},
        )


def test_create_schema_is_for_sqlite_only(migrated_database_url: str) -> None:
    eng = make_trading_engine(migrated_database_url)
    try:
        with pytest.raises(StorageError, match="corec db upgrade"):
            create_schema(eng)
    finally:
        eng.dispose()


def test_prepare_names_the_missing_migration(database_url: str) -> None:
    # A fresh, never-migrated database: the run's one may already be migrated.
    name = f"corec_t_bare_{_tag()}"
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    eng = make_trading_engine(_with_database(database_url, name))
    try:
        with pytest.raises(StorageError, match="run `corec db upgrade` first"):
            prepare(eng)
    finally:
        eng.dispose()
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
