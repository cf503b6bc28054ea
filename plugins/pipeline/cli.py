"""``corec trading``: run trading cycles from the command line and see what they did."""

from __future__ import annotations

import time
import uuid
from typing import Any

import click

from corec_tasks.cli.output import console, handle_errors, print_json, table
from corec_tasks.settings import Settings


def run_cycle(
    key: str, *, inline: bool = False, timeout: float = 300.0, settings: Settings | None = None
) -> dict[str, Any]:
    """Prepare cycle ``key`` here, then run its assets on the workers (or ``inline``,
    one after another in this process) and return the summary. ``settings`` defaults
    to the process's (``get_settings()``)."""
    from celery.result import AsyncResult

    from corec_tasks.celery import app
    from corec_tasks.runtime import get_settings
    from plugins.pipeline.cycle import Trading, summarise
    from plugins.pipeline.tasks import dispatch

    t = Trading(settings or get_settings())
    try:
        started = time.time()
        prepared = t.prepare(key)
        if inline:
            summary = summarise(key, [t.process_asset(j) for j in prepared.jobs], started)
        else:
            finish = dispatch(key, prepared.jobs, t.config.max_parallel_assets, started)
            summary = AsyncResult(finish, app=app).get(timeout=timeout)
        # Preparation to the last asset's result, as this client saw it (either mode).
        summary["client_wall_s"] = round(time.time() - started, 4)
        summary["predictions"] = prepared.predictions
        summary["equity"] = prepared.equity
        summary["allocations"] = len(prepared.allocation.get("allocations", []))
        return summary
    finally:
        t.close()


@click.group()
def trading() -> None:
    """The trading cycle: allocation -> prediction -> pipeline -> strategy -> broker."""


@trading.command()
@click.option("--cycles", default=1, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--key", help="Cycle key prefix (default: a new one). A key already run replays.")
@click.option("--inline", is_flag=True, help="Run the assets one by one here, not on workers.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait per cycle.")
@click.option("--json", "as_json", is_flag=True, help="Print the summaries as JSON.")
@handle_errors
def cycle(cycles: int, key: str | None, inline: bool, timeout: float, as_json: bool) -> None:
    """Run trading cycles now (workers must be running unless --inline)."""
    prefix = key or f"cli-{uuid.uuid4().hex[:8]}"
    out = []
    for i in range(cycles):
        summary = run_cycle(f"{prefix}-{i}" if cycles > 1 else prefix, inline=inline,
                            timeout=timeout)  # fmt: skip
        out.append(summary)
        if not as_json:
            acts = ", ".join(f"{k} {v}" for k, v in sorted(summary["actions"].items()))
            console.print(
                f"cycle {summary['cycle']}: {summary['assets']} assets ({acts}), "
                f"profit {summary['profit']}, {summary['wall_s']} s",
                highlight=False,
            )
    if as_json:
        print_json(out)
    elif any(s["errors"] for s in out):
        rows = [(s["cycle"], e.get("symbol"), e.get("error")) for s in out for e in s["errors"]]
        console.print(table("errors", ["cycle", "symbol", "error"], rows))
