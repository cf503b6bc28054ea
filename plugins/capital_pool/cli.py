"""``corec capital``: the capital pool from the command line.

Actions run directly on the ledger (no worker needed); ``--via-celery`` sends them as
the ``capital_pool.*`` tasks instead, with a grant it mints, and waits for the result.
Without ``--key`` a fresh idempotency key is made and printed: reuse it to retry the
same action safely. Either way the action is audited with the operator as principal:
``operator:<OS user>@<host>``, or ``operator:NAME`` with ``--as NAME``.

``corec capital grant MEMBER ACTION AMOUNT KEY`` prints a grant for one ``celery call``
of ``capital_pool.contribute``/``withdraw`` (60 s, single use): whoever can read the
grant key (``COREC_GRANT_KEY`` or ``<data_dir>/grant.key``) is an operator.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from corec_tasks.cli.output import console, err_console, handle_errors, print_json, table
from corec_tasks.strict import Key, UserId, shown


@contextmanager
def _pool(read_only: bool = False) -> Iterator[Any]:
    """The capital pool; ``read_only``: its ledger on DATABASE_READ_URL (which may lag),
    for reads only."""
    from corec_tasks.runtime import get_settings
    from plugins.capital_pool.service import CapitalPool
    from plugins.capital_pool.settings import capital_config

    settings = get_settings()
    url = settings.read_database_url if read_only else None
    pool = CapitalPool(settings, capital_config(settings), url)
    try:
        yield pool
    finally:
        pool.close()


def _via_celery(task: str, *args: Any, timeout: float = 30.0, **kwargs: Any) -> dict[str, Any]:
    from corec_tasks.celery import app
    from plugins.capital_pool.grants import kwargs_repr

    pending = app.send_task(task, args=list(args), kwargs=kwargs, kwargsrepr=kwargs_repr(kwargs))
    result: dict[str, Any] = pending.get(timeout=timeout)
    pending.forget()  # the grant was in the arguments: do not leave it in the backend
    return result


def _principal(name: str | None) -> str:
    from plugins.capital_pool.audit import operator

    try:
        return operator(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as") from None


def _mint(member: str, kind: str, amount: str, key: str, principal: str) -> str:
    from plugins.capital_pool import grants

    return grants.mint(member, f"capital.{kind}", amount, key, user_id=None,
                       username=principal, key=grants.load_key())  # fmt: skip


def _finish(result: dict[str, Any], as_json: bool, summary: str | None = None) -> None:
    """Print ``result``; exit 1 when it is an error."""
    if as_json:
        print_json(result)
    elif result.get("ok"):
        console.print(summary or result, highlight=False)
    else:
        err_console.print(f"[red]refused:[/] {result.get('error')}", highlight=False)
    if not result.get("ok"):
        sys.exit(1)


def _strict(kind: Any, what: str) -> Any:
    """A click callback checking a value by the strict rules (``corec_tasks.strict``)."""
    from pydantic import TypeAdapter, ValidationError

    adapter: TypeAdapter[Any] = TypeAdapter(kind)

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]["msg"]
            raise click.BadParameter(f"{what}: {problem} (got {shown(value)})") from None

    return check


def _amount(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from plugins.capital_pool.money import AmountError, money_str, parse_amount

    try:
        return money_str(parse_amount(value))
    except AmountError as exc:
        raise click.BadParameter(str(exc)) from None


_user = _strict(UserId, "letters, digits and _.@:- only, 1-128 characters")
_key = _strict(Key, "letters, digits and _.:@/+=#~- only, 1-200 characters")


@click.group()
def capital() -> None:
    """The shared capital pool: contribute, withdraw, status, members, history."""


def _action(kind: str) -> Any:
    @click.argument("user", callback=_user)
    @click.argument("amount", callback=_amount)
    @click.option("--key", callback=_key, help="Idempotency key (default: a new one, printed).")
    @click.option("--via-celery", is_flag=True,
                  help="Send as a Celery task (with a grant minted here) and wait.")
    @click.option("--as", "as_name", metavar="NAME",
                  help="Audit as operator:NAME (default: operator:<OS user>@<host>).")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @handle_errors
    def command(user: str, amount: str, key: str | None, via_celery: bool, as_name: str | None,
                as_json: bool) -> None:  # fmt: skip
        principal = _principal(as_name)
        if key is None:
            key = f"cli-{uuid.uuid4().hex}"
            if not as_json:
                err_console.print(f"idempotency key: {key}", highlight=False)
        if via_celery:
            grant = _mint(user, kind, amount, key, principal)
            result = _via_celery(f"capital_pool.{kind}", user, amount, key, grant=grant)
        else:
            with _pool() as pool:
                result = getattr(pool, kind)(user, amount, key, principal=principal)
        summary = None
        if result.get("ok"):
            verb = "bought" if kind == "contribute" else "redeemed"
            summary = (f"{kind} ${result['amount']} for {user}: {verb} {result['units']} units "
                       f"at NAV {result['nav']}; {user} now holds {result['member_units']} units "
                       f"worth ${result['member_value']}"
                       + (" (replayed: this key was already applied)"
                          if result.get("replayed") else ""))  # fmt: skip
        _finish(result, as_json, summary)

    command.__doc__ = {
        "contribute": "USER buys units for AMOUNT dollars (minimum 100.00) at the current NAV.",
        "withdraw": "USER redeems units worth AMOUNT dollars (within their value and free cash).",
    }[kind]
    return command


capital.command("contribute")(_action("contribute"))
capital.command("withdraw")(_action("withdraw"))


@capital.command()
@click.argument("member", callback=_user)
@click.argument("action", type=click.Choice(["contribute", "withdraw"]))
@click.argument("amount", callback=_amount)
@click.argument("key", callback=_key)
@click.option("--as", "as_name", metavar="NAME",
              help="The principal audited: operator:NAME (default: operator:<OS user>@<host>).")
@handle_errors
def grant(member: str, action: str, amount: str, key: str, as_name: str | None) -> None:
    """Print a grant for one `celery call` of capital_pool.ACTION on MEMBER, AMOUNT, KEY.

    It is valid 60 s, once, for exactly these values, and the ledger audits the action
    as this operator. E.g.:

    \b
      G=$(corec capital grant alice contribute 500.00 k-1)
      celery -A corec_tasks call capital_pool.contribute \\
          --args '["alice", "500.00", "k-1"]' --kwargs "{\\"grant\\": \\"$G\\"}"
    """
    click.echo(_mint(member, action, amount, key, _principal(as_name)))


@capital.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (money as strings).")
@click.option("--no-cache", is_flag=True, help="Read PostgreSQL, not the Redis cache (the "
              "cache is sealed with the stream key; a forged one is ignored and alerted).")
@handle_errors
def status(as_json: bool, no_cache: bool) -> None:
    """Equity, cash, active, units, NAV, phase, risk per trade, VIX and every member."""
    with _pool() as pool:
        result = pool.status(use_cache=not no_cache)
    if as_json or not result.get("ok"):
        _finish(result, True)
        return
    keys = ("equity", "cash", "active", "free_cash", "units", "nav", "phase", "risk_per_trade",
            "vix", "vix_source")  # fmt: skip
    head = result["ledger"]
    console.print(table("capital pool", ["", "value"], [(k, result[k]) for k in keys]
                        + [("ledger entries", str(head["entries"])),
                           ("ledger head seq", str(head["seq"])),
                           ("ledger head hash", head["hash"])]))  # fmt: skip
    rows = [(u, m["units"], m["value"], m["contributed"], m["withdrawn"], m["roi"])
            for u, m in result["members"].items()]  # fmt: skip
    console.print(table("members", ["user", "units", "value", "contributed", "withdrawn",
                                    "roi"], rows))  # fmt: skip


@capital.command()
@click.argument("user", callback=_user)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def member(user: str, as_json: bool) -> None:
    """One member: units, value, contributed, withdrawn, ROI."""
    with _pool() as pool:
        result = pool.member(user)
    if as_json or not result.get("ok"):
        _finish(result, True)
        return
    console.print(
        table(
            f"member {user}",
            ["", "value"],
            [(k, v) for k, v in result.items() if k not in ("ok", "user_id")],
        )
    )


@capital.command()
@click.option("--user", callback=_user, help="Only this member's entries.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def history(user: str | None, limit: int, as_json: bool) -> None:
    """The newest ledger entries (every change of the pool), newest first. Read from
    DATABASE_READ_URL when set (a replica: the newest entries may be missing)."""
    with _pool(read_only=True) as pool:
        result = pool.history(limit, user)
    if as_json or not result.get("ok"):
        _finish(result, True)
        return
    cols = ["seq", "time", "kind", "user_id", "ref", "cash_delta", "active_delta",
            "units_delta", "equity_after"]  # fmt: skip
    console.print(table("capital ledger", cols,
                        [[e[c] for c in cols] for e in result["entries"]]))  # fmt: skip


@capital.command()
@click.option("--key", callback=_key, help="Idempotency key (default: a new one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def allocate(key: str | None, as_json: bool) -> None:
    """Allocate free per-trade slots now and publish them on capital_data."""
    with _pool() as pool:
        result = pool.allocate(key)
    _finish(result, as_json, f"{len(result.get('allocations', []))} allocations, "
                             f"{len(result.get('released', []))} released; "
                             f"phase {result.get('phase')}, risk per trade "
                             f"{result.get('risk_per_trade')}")  # fmt: skip


@capital.command()
@click.option("--as", "as_name", metavar="NAME",
              help="Record the seal as operator:NAME (default: operator:<OS user>@<host>).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def seal(as_name: str | None, as_json: bool) -> None:
    """Seal, once, the ledger entries written before ledger MACs (the legacy range that
    migration 0007_ledger_mac recorded): check their hash chain, then record one MAC,
    under this node's ledger key, over the hash of the last of them. Run it on a node
    holding the deployment's ledger key (COREC_LEDGER_KEY); until then `verify` is red."""
    principal = _principal(as_name)
    with _pool() as pool:
        result = pool.ledger.seal(principal)
    summary = result.get("message") or (
        f"sealed entries seq 1-{result.get('through_seq')} (head {result.get('head_hash')}) "
        f"under ledger key {result.get('key_id')}, recorded as {principal}")
    _finish(result, as_json, summary)


@capital.command()
@click.option("--head", "head", metavar="HASH",
              help="A head hash kept earlier (from `status --no-cache`, which reads it from "
                   "PostgreSQL): prove nothing up to it changed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def verify(head: str | None, as_json: bool) -> None:
    """Check the ledger's hash chain and every entry's MAC (under this node's ledger key),
    then pool state and members against it and the invariants; name the first entry
    that fails (its seq, kind and why: broken chain, missing MAC, bad MAC). Exit 1 when
    anything fails."""
    with _pool() as pool:
        result = pool.verify(head, show_chain=True)
    if not as_json and not result.get("ok") and "problems" in result:
        for problem in result["problems"]:
            err_console.print(f"[red]problem:[/] {problem}", highlight=False)
    summary = None
    if result.get("ok"):
        c = result["chain"]
        summary = (f"hash chain intact over {c['entries']} entries (head seq {c['seq']}, "
                   f"hash {c['hash']})" + (f"; head {head} is in it, so nothing up to it "
                                           "changed" if head else "")
                   + "; every entry's MAC is valid under this node's ledger key"
                   + "; ledger and pool state agree; every invariant holds")  # fmt: skip
    _finish(result, as_json, summary)
