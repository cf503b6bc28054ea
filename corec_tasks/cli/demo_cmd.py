"""``corec demo`` (what ``make demo`` runs)."""

from __future__ import annotations

import click

from corec_tasks.cli.output import handle_errors


@click.command()
@click.option("--events", default=5_000, show_default=True, help="Events to publish.")
@click.option("--cycles", default=3, show_default=True, help="Block cycles to run.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for landing.")
@handle_errors
def demo(events: int, cycles: int, timeout: float) -> None:
    """Run CoreC end to end on the embedded default and stop everything after:
    streams into partitioned PostgreSQL, then the seed's 1,002,000 entities for a
    few cycles, a redirection and an audit.

    Uses REDIS_URL and DATABASE_URL instead when both are set.
    """
    from corec_tasks.demo import run

    if events < 1:
        raise click.BadParameter("must be at least 1", param_hint="--events")
    if cycles < 1:
        raise click.BadParameter("must be at least 1", param_hint="--cycles")
    run(events=events, cycles=cycles, timeout=timeout)
