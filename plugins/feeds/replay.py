"""Replay of OHLC CSV files (columns ``date, open, high, low, close, volume``).

A file is read and checked whole when a feed is built, so a bad row fails at once
with its file and line (``prices.csv:17: high (9.0) is below low (10.0)``), never
halfway through a replay. Which row comes next is a cursor in Redis (see ``state.py``),
shared by every worker and kept across restarts.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from corec_tasks.errors import PluginError

COLUMNS = ("date", "open", "high", "low", "close", "volume")


class ReplayError(PluginError):
    """A CSV file cannot be replayed; the message names the file and line."""

    def __init__(self, message: str) -> None:
        super().__init__("feeds", message)


@dataclass(frozen=True)
class Row:
    """One validated CSV row; ``line`` is its line number in the file (header is 1)."""

    date: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    line: int


def _number(text: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column} is not a number (got {text!r})") from None
    if not math.isfinite(value):
        raise ValueError(f"{column} is not finite (got {text!r})")
    return value


def parse_row(raw: dict[str, str | None], line: int) -> Row:
    """Check one CSV record; ValueError says what is wrong (without the line)."""
    missing = [c for c in COLUMNS if raw.get(c) in (None, "")]
    if missing:
        raise ValueError(f"missing value for {', '.join(missing)}")
    values = {c: str(raw[c]).strip() for c in COLUMNS}
    o, h, lo, c, v = (_number(values[k], k) for k in COLUMNS[1:])
    for name, x in (("open", o), ("high", h), ("low", lo), ("close", c)):
        if x <= 0:
            raise ValueError(f"{name} must be positive (got {x:g})")
    if v < 0:
        raise ValueError(f"volume must not be negative (got {v:g})")
    if h < lo:
        raise ValueError(f"high ({h:g}) is below low ({lo:g})")
    if h < max(o, c) or lo > min(o, c):
        raise ValueError(f"open and close must lie within [low, high] (got {o:g}, {c:g})")
    return Row(values["date"], o, h, lo, c, v, line)


def load_csv(path: str | Path) -> tuple[Row, ...]:
    """Every row of ``path``; ReplayError names the file and line of the first bad one."""
    file = Path(path)
    try:
        with file.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [h.strip().lower() for h in reader.fieldnames or []]
            absent = [c for c in COLUMNS if c not in header]
            if absent:
                raise ReplayError(f"{file}:1: header lacks column(s) {', '.join(absent)}")
            reader.fieldnames = header
            rows = []
            for raw in reader:
                line = reader.line_num
                if None in raw:
                    raise ReplayError(f"{file}:{line}: more fields than the header's columns")
                try:
                    rows.append(parse_row(raw, line))
                except ValueError as exc:
                    raise ReplayError(f"{file}:{line}: {exc}") from None
    except OSError as exc:
        raise ReplayError(f"cannot read {file}: {exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ReplayError(f"{file}: not a readable CSV file: {exc}") from None
    if not rows:
        raise ReplayError(f"{file}: no data rows")
    return tuple(rows)


@lru_cache(maxsize=64)
def _cached(path: str, mtime_ns: int, size: int) -> tuple[Row, ...]:
    return load_csv(path)


def rows_of(path: str | Path) -> tuple[Row, ...]:
    """``load_csv`` cached per process until the file changes (a tick is cheap)."""
    try:
        st = Path(path).stat()
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc}") from None
    return _cached(str(path), st.st_mtime_ns, st.st_size)


def row_at(rows: tuple[Row, ...], cursor: int, loop: bool) -> Row | None:
    """The row at ``cursor``: wrapping around when ``loop``, else None past the end."""
    if cursor < len(rows):
        return rows[cursor]
    return rows[cursor % len(rows)] if loop else None
