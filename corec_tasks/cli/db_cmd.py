"""``corec db upgrade|partitions``."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from corec_tasks.cli.output import console, handle_errors, print_json, settings, table
from corec_tasks.db import make_engine, redact


@click.group()
def db() -> None:
    """PostgreSQL schema (Alembic migrations) and monthly partitions."""


@db.command("upgrade")
@click.option("--revision", default="heads", show_default=True,
              help="Target revision (heads: the framework's and each enabled plugin's branch).")
@handle_errors
def upgrade(revision: str) -> None:
    """Apply migrations as the owner (COREC_MIGRATE_DATABASE_URL, default DATABASE_URL),
    grant the application role (DATABASE_URL) its privileges, then partition upkeep.
    Safe to run from many nodes at once."""
    from corec_tasks.storage.migrate import current
    from corec_tasks.storage.migrate import upgrade as do_upgrade
    from corec_tasks.storage.partitions import ensure_partitions

    s = settings()
    owner_url = s.migrate_database_url
    warnings = do_upgrade(owner_url, revision, app_url=s.database_url)
    engine = make_engine(owner_url)
    try:
        created = ensure_partitions(engine, months_ahead=s.env.partitions_ahead)
    finally:
        engine.dispose()
    console.print(
        f"database {redact(owner_url)} at revision {current(owner_url)}"
        + (f"; created {', '.join(created)}" if created else ""),
        highlight=False,
    )
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


@db.command("partitions")
@click.option("--ensure", is_flag=True, help="Create the current and next months first.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def partitions(ensure: bool, as_json: bool) -> None:
    """List the partitions of `bloques` and `eventos` with their row counts."""
    from corec_tasks.storage.partitions import ensure_partitions, list_partitions

    s = settings()
    engine = make_engine(s.database_url)
    try:
        if ensure:
            ensure_partitions(engine, months_ahead=s.env.partitions_ahead)
        parts = list_partitions(engine)
    finally:
        engine.dispose()
    if as_json:
        print_json(
            [
                {
                    "table": p.table,
                    "name": p.name,
                    "from": p.range_from,
                    "to": p.range_to,
                    "default": p.is_default,
                    "rows": p.rows,
                }
                for p in parts
            ]
        )
        return
    rows = [
        (p.table, p.name, "DEFAULT" if p.is_default else _when(p.range_from), _when(p.range_to),
         f"{p.rows:,}")
        for p in parts
    ]  # fmt: skip
    console.print(table("partitions", ["table", "partition", "from", "to", "rows"], rows))
