"""``corec capital statement`` and ``corec capital settle``: the daily settlement from
the command line. Added to the ``capital`` group of ``cli.py`` (listed second in
plugin.json's ``cli``, so importing this module adds the commands to that group).

``settle`` asks its clock once: the system's, or the one a caller hands ``main`` as
``obj={"clock": ...}`` (``CliRunner().invoke``), which is how a test fixes its day. No
option sets it: a ``--now`` in the future would settle a day before it is over."""

from __future__ import annotations

import sys
from datetime import date, datetime

import click

from corec_tasks.cli.output import console, err_console, handle_errors, print_json, table
from plugins.capital_pool.cli import capital


def _day(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    from plugins.capital_pool.settlement_tasks import parse_day

    if value is None:
        return None
    try:
        return parse_day(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _now(ctx: click.Context) -> datetime:
    """The settlement's ``now``: the root context's ``obj["clock"]`` when a caller gave
    one, else the system clock."""
    from plugins.capital_pool.settlement import utcnow

    obj = ctx.find_root().obj
    clock = obj.get("clock", utcnow) if isinstance(obj, dict) else utcnow
    now: datetime = clock()
    return now


@capital.command("statement")
@click.argument("user_id")
@click.option("--day", callback=_day, help="The UTC day, YYYY-MM-DD (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def statement(user_id: str, day: date | None, as_json: bool) -> None:
    """A member's settled statement: units, value, contributed, withdrawn, ROI for the
    day and to date."""
    from corec_tasks.runtime import get_settings
    from plugins.capital_pool import settlement

    # A settled statement never changes: a replica that lags shows it or not yet.
    s = get_settings()
    with settlement.connect(s.read_database_url) as conn:
        found = settlement.statement(conn, user_id, day)
    if found is None:
        when = f"for {day}" if day else "yet"
        lagging = "; read from DATABASE_READ_URL, which may lag" if s.env.database_read_url else ""
        err_console.print(f"no statement for {user_id} {when} (days are settled after "
                          f"midnight UTC; `corec capital settle`{lagging})",
                          highlight=False)  # fmt: skip
        sys.exit(1)
    out = found.to_json()
    if as_json:
        print_json(out)
        return
    console.print(
        table(
            f"statement {user_id} {out['day']}",
            ["field", "value"],
            [(k, "-" if v is None else str(v)) for k, v in out.items()],
        )
    )


@capital.command("settle")
@click.option("--day", callback=_day, help="Settle this UTC day (default: every missing "
              "finished day of the last week).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@handle_errors
def settle(ctx: click.Context, day: date | None, as_json: bool) -> None:
    """Run the daily settlement now (idempotent: a settled day is left as it is)."""
    from corec_tasks.runtime import get_settings
    from plugins.capital_pool import settlement

    now = _now(ctx)
    with settlement.connect(get_settings().database_url) as conn:
        runs = ([settlement.settle_day(conn, day, now)] if day
                else settlement.settle_missing(conn, now))  # fmt: skip
    if as_json:
        print_json({"ok": all(r["ok"] for r in runs), "days": runs})
    else:
        for r in runs:
            console.print(r, highlight=False)
    if not all(r["ok"] for r in runs):
        sys.exit(1)
