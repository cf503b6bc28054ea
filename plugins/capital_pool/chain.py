"""The ledger's hash chain: pure functions, no I/O.

Each ``capital_ledger`` entry stores ``prev_hash`` (the previous entry's ``hash``,
``GENESIS`` for the first) and ``hash = SHA-256(canonical(prev_hash, entry))``, so
changing any field of any entry, or removing or reordering entries, breaks the chain
from that entry on. An operator who keeps the head hash (``corec capital status``)
elsewhere can later prove that nothing up to it changed (``verify --head``), even
against someone who rewrote a row and recomputed every hash after it.

Canonical serialisation (version ``capital_ledger/v1``), the bytes that are hashed:
the UTF-8 of the compact JSON array (``separators=(",", ":")``, ``ensure_ascii``)

    ["capital_ledger/v1", prev_hash, seq, created_at, idempotency_key, kind, user_id,
     ref, cash_delta, active_delta, units_delta, equity_after, cash_after,
     active_after, units_after]

- ``seq`` a JSON integer; ``user_id`` and ``ref`` ``null`` when absent;
- ``created_at`` in UTC, ISO 8601 with microseconds: ``2026-11-30T15:06:40.123456+00:00``;
- every Decimal as a plain string without exponent or trailing zeros, zero as ``"0"``
  (``Decimal("100.50")`` -> ``"100.5"``, ``Decimal("-0.00")`` -> ``"0"``), so the value
  read back from ``NUMERIC`` hashes the same as the value computed before the write.

The migration ``0004`` carries a frozen copy of this function (migrations never import
plugins); a test checks both give the same hashes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

VERSION = "capital_ledger/v1"
#: ``prev_hash`` of the first entry.
GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class Entry:
    """A ledger entry's hashed content, in canonical field order."""

    seq: int
    created_at: datetime
    idempotency_key: str
    kind: str
    user_id: str | None
    ref: str | None
    cash_delta: Decimal
    active_delta: Decimal
    units_delta: Decimal
    equity_after: Decimal
    cash_after: Decimal
    active_after: Decimal
    units_after: Decimal


def decimal_str(value: Decimal) -> str:
    """The canonical text of a Decimal: no exponent, no trailing zeros, ``"0"`` for zero."""
    if not value.is_finite():
        raise ValueError(f"a ledger amount must be finite (got {value})")
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def time_str(when: datetime) -> str:
    """The canonical text of a timestamp: UTC, ISO 8601, microseconds."""
    if when.tzinfo is None:
        raise ValueError("a ledger timestamp must be timezone-aware")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(prev_hash: str, e: Entry) -> bytes:
    """The bytes hashed for ``e`` (see the module docstring)."""
    return json.dumps(
        [VERSION, prev_hash, e.seq, time_str(e.created_at), e.idempotency_key, e.kind,
         e.user_id, e.ref, decimal_str(e.cash_delta), decimal_str(e.active_delta),
         decimal_str(e.units_delta), decimal_str(e.equity_after), decimal_str(e.cash_after),
         decimal_str(e.active_after), decimal_str(e.units_after)],
        separators=(",", ":"), ensure_ascii=True,
    ).encode()  # fmt: skip


def entry_hash(prev_hash: str, e: Entry) -> str:
    """``hash`` of ``e`` after ``prev_hash``: hex SHA-256 of ``canonical``."""
    return hashlib.sha256(canonical(prev_hash, e)).hexdigest()


@dataclass(slots=True)
class ChainReport:
    """What walking the chain found: its length and head, the first break, a known head."""

    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    first_break: str | None = None
    broken: int = 0
    found: set[str] = field(default_factory=set)


def walk(rows: Iterable[tuple[Entry, str, str]], look_for: Iterable[str] = ()) -> ChainReport:
    """Check ``(entry, prev_hash, hash)`` rows in ``seq`` order from the genesis.

    Each entry must link to the previous entry's stored hash and its content must hash
    to its stored hash. The first failure is described (seq, kind, key, what differs);
    later ones are only counted, each checked against its own stored predecessor, so a
    single changed entry shows as one break. ``found`` holds the ``look_for`` hashes
    met before any break: the chain from the genesis up to each of them is intact.
    """
    wanted = set(look_for)
    report = ChainReport()
    prev = GENESIS
    for entry, prev_hash, stored in rows:
        problem = None
        if prev_hash != prev:
            problem = (f"its prev_hash {prev_hash[:16]}… is not the previous entry's hash "
                       f"{prev[:16]}… (an entry before it was removed, inserted or "
                       "reordered)")  # fmt: skip
        else:
            computed = entry_hash(prev_hash, entry)
            if computed != stored:
                problem = (f"its content no longer matches its hash (stored {stored[:16]}…, "
                           f"content hashes to {computed[:16]}…): a field of this entry was "
                           "changed after it was written")  # fmt: skip
        if problem is None:
            if stored in wanted and report.first_break is None:
                report.found.add(stored)
        else:
            report.broken += 1
            if report.first_break is None:
                who = f" by {entry.user_id}" if entry.user_id else ""
                report.first_break = (f"ledger entry seq {entry.seq} ({entry.kind}{who}, key "
                                      f"{entry.idempotency_key!r}): {problem}")  # fmt: skip
        report.entries += 1
        report.head_seq, report.head_hash = entry.seq, stored
        prev = stored
    return report
