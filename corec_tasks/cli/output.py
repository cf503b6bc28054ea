"""Shared CLI plumbing: error handling and JSON-or-table output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from corec_tasks.errors import ConfigurationError, CorecError
from corec_tasks.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)


def handle_errors(func: F) -> F:
    """Turn CorecError into a clear message on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigurationError as exc:
            err_console.print(f"[red]error:[/] {exc.source} is invalid:", highlight=False)
            for key, msg in exc.problems:
                err_console.print(f"  [bold]{key}[/]: {msg}", highlight=False)
            sys.exit(1)
        except CorecError as exc:
            err_console.print(f"[red]error:[/] {exc}", highlight=False)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def settings() -> Settings:
    """Settings for this command (environment + config file)."""
    return load_settings()


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    out = Table(title=title, title_justify="left")
    for col in columns:
        out.add_column(col, overflow="fold")
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    return out
