"""``corec users add|list|disable|enable|unlock|passwd``: trading-layer accounts.

Runs on DATABASE_URL (PostgreSQL after `corec db upgrade`, or ``sqlite:///file.db``,
whose schema is created on first use), with the ``aaa`` plugin's options from
corec_config.json; without a config file, on DATABASE_URL with default options.
Whoever can run it holds the database's credentials, so it acts as a trusted admin;
each change is audited as ``via=cli:<operating-system user>``.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from corec_tasks.cli.output import console, handle_errors, print_json, settings, table
from corec_tasks.settings import load_env

if TYPE_CHECKING:
    from plugins.aaa.service import AAAPlugin, UserInfo

ROLES = ("admin", "member", "viewer")


@contextmanager
def _plugin() -> Iterator[AAAPlugin]:
    from plugins.aaa.config import AAAConfig, config_from_settings
    from plugins.aaa.service import AAAPlugin

    env = load_env()
    if env.database_url and not env.config_path.exists():
        # A lone trading node (say on SQLite) needs no corec_config.json: defaults.
        url, config = env.database_url, AAAConfig()
    else:
        s = settings()
        url, config = s.database_url, config_from_settings(s)
    plugin = AAAPlugin.from_url(url, config)
    try:
        yield plugin
    finally:
        plugin.close()


def _via() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "cli"


def _state(user: UserInfo) -> str:
    if not user.is_active:
        return "disabled"
    return "locked" if user.locked_until else "active"


@click.group()
def users() -> None:
    """Accounts of the trading layer (AAA plugin): add, list, disable, enable, unlock, passwd."""


@users.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the user may do.")
@click.option("--email", default=None, help="Optional, unique.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
@handle_errors
def add(username: str, role: str, email: str | None, password_stdin: bool) -> None:
    """Create USERNAME (asks for the password twice unless --password-stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _plugin() as aaa:
        user = aaa.add_user(username, password, role, email=email, via=_via())
    console.print(f"added {user.username!r} ({user.role.value}), id {user.id}", highlight=False)


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def list_(as_json: bool) -> None:
    """Every account with its role and state (active, locked, disabled)."""
    with _plugin() as aaa:
        found = aaa.list_users()
    if as_json:
        print_json([u.as_json() for u in found])
        return
    rows = [
        (
            u.id,
            u.username,
            u.role.value,
            _state(u),
            u.failed_logins,
            u.email,
            u.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for u in found
    ]
    columns = ["id", "username", "role", "state", "failed logins", "email", "created (UTC)"]
    console.print(table("users", columns, rows))


@users.command("disable")
@click.argument("username")
@handle_errors
def disable(username: str) -> None:
    """Refuse USERNAME's logins and end their sessions."""
    with _plugin() as aaa:
        aaa.set_active(username, False, via=_via())
    console.print(f"disabled {username!r}; its sessions are revoked", highlight=False)


@users.command("enable")
@click.argument("username")
@handle_errors
def enable(username: str) -> None:
    """Let USERNAME log in again."""
    with _plugin() as aaa:
        aaa.set_active(username, True, via=_via())
    console.print(f"enabled {username!r}", highlight=False)


@users.command("unlock")
@click.argument("username")
@handle_errors
def unlock(username: str) -> None:
    """Lift a lockout after too many failed logins."""
    with _plugin() as aaa:
        aaa.unlock(username, via=_via())
    console.print(f"unlocked {username!r}", highlight=False)


@users.command("passwd")
@click.argument("username")
@click.option(
    "--password-stdin", is_flag=True, help="Read the new password from the first line of stdin."
)
@handle_errors
def passwd(username: str, password_stdin: bool) -> None:
    """Set USERNAME's password (asked twice, or from stdin; never an argument) and
    revoke every session they hold."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    with _plugin() as aaa:
        revoked = aaa.change_password(username, password, via=_via())
    console.print(f"password of {username!r} changed; {revoked} session(s) revoked",
                  highlight=False)  # fmt: skip
