"""Declarative models of the partitioned ``bloques`` and ``eventos`` tables.

The tables themselves are created by the Alembic migrations (partitions included);
these models are for reads through SQLAlchemy and for autogenerate's diff.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    REAL,
    BigInteger,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Deterministic constraint names, so migrations can name what they alter or drop.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL; plain JSON elsewhere so the shared metadata still builds on SQLite.
JSONType = JSON().with_variant(JSONB(), "postgresql")


# Keys are identifiers: byte order is faster than a locale's and immune to OS updates.
_KEY = Text(collation="C")


class Base(DeclarativeBase):
    """Declarative base of every CoreC model (one MetaData, one naming convention)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Bloque(Base):
    """One block's result for one cycle (``mensajes``: zstd level-3 compressed JSON)."""

    __tablename__ = "bloques"
    __table_args__ = ({"postgresql_partition_by": 'RANGE ("timestamp")'},)

    id: Mapped[str] = mapped_column(_KEY, primary_key=True)
    ciclo: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    canal: Mapped[int | None] = mapped_column(Integer)
    num_entidades: Mapped[int | None] = mapped_column(Integer)
    fitness: Mapped[float | None] = mapped_column(REAL)
    carga: Mapped[float | None] = mapped_column(REAL)
    errores: Mapped[int | None] = mapped_column(Integer)
    # In the key because a partitioned table's key must hold the partition key; it is
    # derived from (block, cycle), so a redelivered write still hits the same key.
    timestamp: Mapped[float] = mapped_column(Double, primary_key=True)
    instance_id: Mapped[str | None] = mapped_column(Text)
    mensajes: Mapped[bytes | None] = mapped_column(LargeBinary)


class Evento(Base):
    """One stream entry persisted from the bus; ``entry_key`` is ``<stream>:<entry id>``."""

    __tablename__ = "eventos"
    __table_args__ = ({"postgresql_partition_by": 'RANGE ("timestamp")'},)

    entry_key: Mapped[str] = mapped_column(_KEY, primary_key=True)
    canal: Mapped[str | None] = mapped_column(_KEY)
    datos: Mapped[Any] = mapped_column(JSONType, nullable=True)
    timestamp: Mapped[float] = mapped_column(Double, primary_key=True)
    instance_id: Mapped[str | None] = mapped_column(Text)


# The seed's composite read index; declared on the parent so every partition inherits it.
Index("ix_bloques_canal_timestamp", Bloque.canal, Bloque.timestamp.desc())
Index("ix_eventos_canal_timestamp", Evento.canal, Evento.timestamp.desc())
