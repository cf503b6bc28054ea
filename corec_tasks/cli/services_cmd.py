"""``corec services up|down|status``: the embedded Redis and PostgreSQL."""

from __future__ import annotations

import shlex

import click

from corec_tasks import services as embedded
from corec_tasks.cli.output import console, handle_errors, print_json, table
from corec_tasks.settings import load_env


@click.group()
def services() -> None:
    """Start, stop and inspect the embedded Redis and PostgreSQL (one-node default)."""


@services.command("up")
@handle_errors
def up() -> None:
    """Start both (or reuse the running ones), make this machine's keys if missing
    (`corec keys init`), and print the URLs to export."""
    from corec_tasks.keys import init
    from corec_tasks.settings import load_settings

    data_dir = load_env().data_dir
    state = embedded.up(data_dir)
    # One machine: its keys are made here once (a multi-node deployment runs
    # `corec keys init` on its first node and copies them).
    made = [p.spec.env for p, how in init(load_settings()) if how == "made"]
    keys = f"; made keys {', '.join(made)}" if made else ""
    console.print(f"[green]embedded services running[/] under {data_dir}{keys}", highlight=False)
    click.echo(f"export REDIS_URL={shlex.quote(state.redis_url)}")
    click.echo(f"export DATABASE_URL={shlex.quote(state.database_url)}")
    click.echo(f"export COREC_MIGRATE_DATABASE_URL={shlex.quote(state.owner_database_url)}")


@services.command("down")
@handle_errors
def down() -> None:
    """Stop both (fast, clean shutdown)."""
    stopped = embedded.down(load_env().data_dir)
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@services.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def status(as_json: bool) -> None:
    """Show whether each embedded server runs, with its URL."""
    info = embedded.status(load_env().data_dir)
    if as_json:
        print_json(info)
        return
    rows = []
    for name, item in info.items():
        if isinstance(item, dict):
            state = "running" if item["running"] else "stopped"
            rows.append((name, state, item["pid"], item["url"]))
        else:
            rows.append((name, "not started", "", ""))
    console.print(table("embedded services", ["service", "state", "pid", "url"], rows))
