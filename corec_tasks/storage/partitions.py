"""Monthly range partitions of ``bloques`` and ``eventos``: naming, bounds and upkeep.

Partitions are ``<table>_YYYY_MM`` with bounds in epoch seconds of the UTC month
starts; each table also has ``<table>_default`` so no row is ever refused. Once
migration app_role is applied, months are created through the owner's SECURITY
DEFINER function, so the application role (not the tables' owner) can run upkeep too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from corec_tasks.errors import StorageError

PARTITIONED_TABLES: tuple[str, ...] = ("bloques", "eventos")
PARTITION_KEY = "timestamp"

#: The owner's SECURITY DEFINER function (migration app_role) that creates one
#: month's partition, so an application role that does not own the tables can run upkeep.
PARTITION_FUNCTION = "corec_create_month_partition"

#: pg_advisory_xact_lock key serialising every partition change (any node, any worker).
LOCK_KEY = 0x636F7265_63500001

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
_BOUND = re.compile(r"FROM \((?P<lo>[^)]*)\) TO \((?P<hi>[^)]*)\)")


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition as ``corec db partitions`` shows it."""

    table: str
    name: str
    range_from: float | None
    range_to: float | None
    is_default: bool
    rows: int


def month_bounds(year: int, month: int) -> tuple[float, float]:
    """Epoch seconds of the UTC start of this month and of the next one."""
    start = datetime(year, month, 1, tzinfo=UTC)
    ny, nm = _next_month(year, month)
    end = datetime(ny, nm, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def partition_name(table: str, year: int, month: int) -> str:
    """``bloques_2025_04``: the seed's monthly partition name."""
    return f"{table}_{year:04d}_{month:02d}"


def default_partition_name(table: str) -> str:
    """The DEFAULT partition that catches rows outside every monthly range."""
    return f"{table}_default"


def create_partition_sql(table: str, year: int, month: int) -> str:
    """Plain ``CREATE TABLE ... PARTITION OF`` for a month (offline SQL; no row moves)."""
    _check_ident(table)
    lo, hi = month_bounds(year, month)
    return (
        f'CREATE TABLE "{partition_name(table, year, month)}" PARTITION OF "{table}" '
        f"{_bound_sql(lo, hi)}"
    )


def months_from(now: datetime, ahead: int) -> list[tuple[int, int]]:
    """``(year, month)`` of ``now``'s UTC month and the ``ahead`` months after it.

    A naive ``now`` is taken as UTC (partition bounds are UTC month starts).
    """
    if ahead < 0:
        raise ValueError("ahead must be >= 0")
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    months = [(now.year, now.month)]
    for _ in range(ahead):
        months.append(_next_month(*months[-1]))
    return months


def ensure_partitions(
    conn_or_engine: Connection | Engine,
    months_ahead: int = 3,
    now: datetime | None = None,
    tables: tuple[str, ...] = PARTITIONED_TABLES,
    lock_timeout_s: float = 10.0,
) -> list[str]:
    """Create the current month's partition and the next ``months_ahead``; return new names.

    Idempotent and safe to run concurrently. Rows already in the DEFAULT partition
    that belong to a new month are moved into it in the same transaction. Given a
    Connection, the work joins its transaction and the caller commits; given an
    Engine, it commits on its own. A table lock not granted within
    ``lock_timeout_s`` (a long transaction is reading it) fails with StorageError
    rather than queueing every writer behind the waiting lock; retry later.
    """
    months = months_from(now or datetime.now(UTC), months_ahead)
    for table in tables:
        _check_ident(table)
    try:
        if isinstance(conn_or_engine, Engine):
            with conn_or_engine.begin() as conn:
                return _ensure(conn, months, tables, lock_timeout_s)
        return _ensure(conn_or_engine, months, tables, lock_timeout_s)
    except OperationalError as exc:
        if isinstance(exc.orig, psycopg.errors.LockNotAvailable):
            raise StorageError(
                f"partition upkeep: a table stayed locked for over {lock_timeout_s:g}s "
                "(a long transaction is using it); nothing was changed, retry later"
            ) from exc
        raise StorageError(f"partition upkeep failed: {exc}") from exc
    except SQLAlchemyError as exc:
        raise StorageError(f"partition upkeep failed: {exc}") from exc


def list_partitions(conn_or_engine: Connection | Engine, exact: bool = True) -> list[PartitionInfo]:
    """Every partition of the partitioned tables, by table then range (default last).

    ``rows`` is an exact ``count(*)``; with ``exact=False`` it is the planner's
    estimate (cheap on big tables, -1 or 0 until the table is analysed).
    """
    try:
        if isinstance(conn_or_engine, Engine):
            with conn_or_engine.connect() as conn:
                return _list(conn, exact)
        return _list(conn_or_engine, exact)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot list partitions: {exc}") from exc


def _ensure(
    conn: Connection, months: list[tuple[int, int]], tables: tuple[str, ...], lock_timeout_s: float
) -> list[str]:
    # One lock for every caller: beat upkeep, migrations and a CLI run never interleave.
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
    # A waiting ACCESS EXCLUSIVE request queues every later writer behind it, so
    # give up early instead; restored below, as the caller's transaction goes on.
    previous = conn.execute(text("SELECT current_setting('lock_timeout')")).scalar_one()
    timeout = f"{max(1, int(lock_timeout_s * 1000))}ms"
    conn.execute(text("SELECT set_config('lock_timeout', :v, true)"), {"v": timeout})
    created: list[str] = []
    via_function = _has_function(conn)
    for table in tables:
        existing = _children(conn, table)
        for year, month in months:
            name = partition_name(table, year, month)
            if name in existing:
                continue
            if via_function:
                # The owner's function: works whether or not this role owns the tables.
                made = conn.execute(
                    text(f"SELECT {PARTITION_FUNCTION}(:t, :y, :m)"),
                    {"t": table, "y": year, "m": month},
                ).scalar()
                if made:
                    created.append(str(made))
                continue
            if _exists(conn, name):
                raise StorageError(
                    f"table {name} exists but is not a partition of {table}; "
                    "rename or drop it, then rerun partition upkeep"
                )
            has_default = default_partition_name(table) in existing
            _create_partition(conn, table, name, *month_bounds(year, month), has_default)
            created.append(name)
    conn.execute(text("SELECT set_config('lock_timeout', :v, true)"), {"v": previous})
    return created


def _create_partition(
    conn: Connection, table: str, name: str, lo: float, hi: float, has_default: bool
) -> None:
    """Create ``name`` standalone, move its rows out of DEFAULT, then attach it.

    CREATE ... PARTITION OF is refused when DEFAULT already holds rows of the range,
    and it locks the parent ACCESS EXCLUSIVE; ATTACH needs only SHARE UPDATE
    EXCLUSIVE on the parent, so writers keep flowing into the other partitions.
    """
    default = default_partition_name(table)
    # Parent before default, the order writers lock them in, so no deadlock.
    conn.execute(text(f'LOCK TABLE "{table}" IN SHARE UPDATE EXCLUSIVE MODE'))
    if has_default:
        conn.execute(text(f'LOCK TABLE "{default}" IN ACCESS EXCLUSIVE MODE'))
    conn.execute(text(f'CREATE TABLE "{name}" (LIKE "{table}" INCLUDING DEFAULTS)'))
    if has_default:
        cols = ", ".join(f'"{c}"' for c in _columns(conn, table))
        conn.execute(
            text(
                f'WITH moved AS (DELETE FROM "{default}" '
                f'WHERE "{PARTITION_KEY}" >= :lo AND "{PARTITION_KEY}" < :hi '
                f"RETURNING {cols}) "
                f'INSERT INTO "{name}" ({cols}) SELECT {cols} FROM moved'
            ),
            {"lo": lo, "hi": hi},
        )
    conn.execute(text(f'ALTER TABLE "{table}" ATTACH PARTITION "{name}" {_bound_sql(lo, hi)}'))


def _bound_sql(lo: float, hi: float) -> str:
    # Bounds are whole seconds, so repr() is exact and PostgreSQL reads it back exactly.
    return f"FOR VALUES FROM ('{lo!r}') TO ('{hi!r}')"


def _list(conn: Connection, exact: bool) -> list[PartitionInfo]:
    rows = conn.execute(
        text(
            """
            SELECT p.relname, c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples
            FROM pg_partitioned_table pt
            JOIN pg_class p ON p.oid = pt.partrelid
            JOIN pg_inherits i ON i.inhparent = p.oid
            JOIN pg_class c ON c.oid = i.inhrelid
            WHERE p.relnamespace = to_regnamespace(current_schema())
            ORDER BY p.relname, c.relname
            """
        )
    ).all()
    out: list[PartitionInfo] = []
    for table, name, bound, reltuples in rows:
        lo, hi = _parse_bound(bound)
        count = (
            int(conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one())
            if exact
            else int(reltuples)
        )
        out.append(PartitionInfo(table, name, lo, hi, bound == "DEFAULT", count))
    out.sort(key=lambda p: (p.table, p.is_default, p.range_from or 0.0))
    return out


def _parse_bound(bound: str) -> tuple[float | None, float | None]:
    """``FOR VALUES FROM ('1.7e9') TO ('1.8e9')`` -> floats; MINVALUE/MAXVALUE -> None."""
    match = _BOUND.search(bound)
    if not match:
        return None, None
    return _bound_value(match["lo"]), _bound_value(match["hi"])


def _bound_value(raw: str) -> float | None:
    raw = raw.strip().strip("'")
    return None if raw in ("MINVALUE", "MAXVALUE") else float(raw)


def _children(conn: Connection, table: str) -> set[str]:
    parent = conn.execute(text("SELECT to_regclass(:t)::oid"), {"t": table}).scalar()
    if parent is None:
        raise StorageError(f"table {table} does not exist; run `corec db upgrade` first")
    names = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = :p"
        ),
        {"p": parent},
    ).scalars()
    return set(names)


def _has_function(conn: Connection) -> bool:
    """Whether migration app_role's partition function exists (not before it)."""
    sig = f"{PARTITION_FUNCTION}(text, integer, integer)"
    return conn.execute(text("SELECT to_regprocedure(:s)"), {"s": sig}).scalar() is not None


def _exists(conn: Connection, name: str) -> bool:
    return conn.execute(text("SELECT to_regclass(:n)"), {"n": f'"{name}"'}).scalar() is not None


def _columns(conn: Connection, table: str) -> list[str]:
    return list(
        conn.execute(
            text(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:t) "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            ),
            {"t": f'"{table}"'},
        ).scalars()
    )


def _check_ident(name: str) -> None:
    # Names are spliced into DDL, so accept plain lower-case identifiers only.
    if not _IDENT.match(name):
        raise StorageError(f"not a valid table name: {name!r}")


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)
