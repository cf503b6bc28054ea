"""``corec demo`` (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path

import click

from corec_tasks.cli.output import handle_errors


@click.command()
@click.option("--events", default=5_000, show_default=True, help="Events to publish.")
@click.option("--cycles", default=3, show_default=True, help="Block cycles to run.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for landing.")
@click.option("--trading-cycles", default=20, show_default=True,
              type=click.IntRange(1, 1000), help="Full trading cycles to run on the workers.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the PNG chart [default: <data dir>/demo_report.png].")
@handle_errors
def demo(events: int, cycles: int, timeout: float, trading_cycles: int,
         report: Path | None) -> None:  # fmt: skip
    """Run CoreC end to end on the embedded default and stop everything after:
    streams into partitioned PostgreSQL, then the seed's 1,002,000 entities for a
    few cycles, a redirection and an audit, the capital pool, then trading cycles on
    the simulator (an eager demo strategy, so positions open and close), and a report:
    a table per trading cycle and a PNG chart of NAV and block fitness.

    Uses REDIS_URL and DATABASE_URL instead when both are set.
    """
    from corec_tasks.demo import run

    if events < 1:
        raise click.BadParameter("must be at least 1", param_hint="--events")
    if cycles < 1:
        raise click.BadParameter("must be at least 1", param_hint="--cycles")
    run(events=events, cycles=cycles, timeout=timeout, trading_cycles=trading_cycles,
        report=report)  # fmt: skip
