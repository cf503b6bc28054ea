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

MAC (``capital_ledger/mac/v1``). The hash has no key: anyone who can INSERT can compute
the next one. So each entry also stores ``mac``, the hex HMAC-SHA256, keyed with the
*ledger key* (``ledger_key.py``: on the nodes, never in the database), of

    b"capital_ledger/mac/v1\n" + canonical(prev_hash, entry)

that is, of every column the entry has but ``hash`` and ``mac`` (which are derived from
the same bytes): seq, created_at, idempotency key, kind, member, ref, the three deltas,
the four balances after, and the previous entry's hash, which binds the entry to its
place in the chain. An entry's MAC proves a holder of the ledger key wrote it exactly
so; ``walk`` with a key checks every MAC after the *legacy range* (entries written before
migration ``0007_ledger_mac``), which one MAC instead covers: the operator's *seal*,

    HMAC-SHA256(key, b"capital_ledger/seal/v1\n" + b'[through_seq,"hash"]')

over the hash of the range's last entry, which the chain makes commit to every entry
up to it (``seal_mac``). ``key_id`` names a key without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

VERSION = "capital_ledger/v1"
#: ``prev_hash`` of the first entry.
GENESIS = "0" * 64
MAC_TAG = b"capital_ledger/mac/v1\n"
SEAL_TAG = b"capital_ledger/seal/v1\n"
KEY_ID_TAG = b"capital_ledger/key-id/v1"


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


def entry_mac(key: bytes, prev_hash: str, e: Entry) -> str:
    """``mac`` of ``e`` after ``prev_hash``: hex HMAC-SHA256 of ``MAC_TAG + canonical``."""
    return hmac.new(key, MAC_TAG + canonical(prev_hash, e), hashlib.sha256).hexdigest()


def link(key: bytes, prev_hash: str, e: Entry) -> tuple[str, str]:
    """``(hash, mac)`` of ``e`` after ``prev_hash``, serialising it once (the write path)."""
    body = canonical(prev_hash, e)
    return (hashlib.sha256(body).hexdigest(),
            hmac.new(key, MAC_TAG + body, hashlib.sha256).hexdigest())  # fmt: skip


def seal_mac(key: bytes, through_seq: int, head_hash: str) -> str:
    """The seal of the legacy range ``1..through_seq`` whose last entry hashes to
    ``head_hash`` (see the module docstring)."""
    body = SEAL_TAG + json.dumps([through_seq, head_hash], separators=(",", ":")).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A short public name for ``key`` (16 hex digits of an HMAC): tells two keys apart
    in messages and seals, and reveals nothing of the key."""
    return hmac.new(key, KEY_ID_TAG, hashlib.sha256).hexdigest()[:16]


@dataclass(slots=True)
class ChainReport:
    """What walking the chain found: its length and head, the first failure (its seq,
    kind and why), a known head, and how the MACs fared."""

    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    first_break: str | None = None
    first_seq: int | None = None
    first_kind: str | None = None
    first_reason: str | None = None
    broken: int = 0
    found: set[str] = field(default_factory=set)
    #: The hash of each seq in ``hash_at`` (the legacy range's last entry, for its seal).
    hashes: dict[int, str] = field(default_factory=dict)
    macs_checked: int = 0
    macs_bad: int = 0


Row = tuple[Entry, str, str] | tuple[Entry, str, str, str | None]


def walk(
    rows: Iterable[Row],
    look_for: Iterable[str] = (),
    *,
    key: bytes | None = None,
    legacy_through: int = 0,
    hash_at: Iterable[int] = (),
) -> ChainReport:
    """Check ``(entry, prev_hash, hash[, mac])`` rows in ``seq`` order from the genesis.

    Each entry must link to the previous entry's stored hash and its content must hash
    to its stored hash; with ``key``, each entry after ``legacy_through`` must carry the
    MAC of its content under ``key`` (``missing MAC``, ``bad MAC``). The first failure is
    described (seq, kind, key, why); later ones are only counted, each checked against
    its own stored predecessor, so a single changed entry shows as one break. ``found``
    holds the ``look_for`` hashes met before any failure: the chain from the genesis up
    to each of them is intact (and, with ``key``, authentic).
    """
    wanted = set(look_for)
    keep = set(hash_at)
    report = ChainReport()
    prev = GENESIS
    for entry, prev_hash, stored, *rest in rows:
        mac = rest[0] if rest else None
        problem = why = None
        if prev_hash != prev:
            why = "broken chain"
            problem = (f"its prev_hash {prev_hash[:16]}… is not the previous entry's hash "
                       f"{prev[:16]}… (an entry before it was removed, inserted or "
                       "reordered)")  # fmt: skip
        elif key is None or entry.seq <= legacy_through:
            computed = entry_hash(prev_hash, entry)
        else:
            computed, expected = link(key, prev_hash, entry)
        if why is None and computed != stored:
            why = "broken chain"
            problem = (f"its content no longer matches its hash (stored {stored[:16]}…, "
                       f"content hashes to {computed[:16]}…): a field of this entry was "
                       "changed after it was written")  # fmt: skip
        elif why is None and key is not None and entry.seq > legacy_through:
            report.macs_checked += 1
            if mac is None:
                why = "missing MAC"
                problem = ("it carries no MAC: it was not written by CoreC's ledger (which "
                           "MACs every entry with the ledger key), e.g. a direct INSERT")
            elif not hmac.compare_digest(mac, expected):
                report.macs_bad += 1
                why = "bad MAC"
                problem = ("its MAC does not match its content under the ledger key: it "
                           "was written without that key (forged), or under another key")
        if entry.seq in keep:
            report.hashes[entry.seq] = stored
        if problem is None:
            if stored in wanted and report.first_break is None:
                report.found.add(stored)
        else:
            report.broken += 1
            if report.first_break is None:
                who = f" by {entry.user_id}" if entry.user_id else ""
                report.first_seq, report.first_kind, report.first_reason = (
                    entry.seq, entry.kind, why)
                # "missing MAC: ..." / "bad MAC: ..."; a chain break says what broke.
                text = problem if why == "broken chain" else f"{why}: {problem}"
                report.first_break = (f"ledger entry seq {entry.seq} ({entry.kind}{who}, key "
                                      f"{entry.idempotency_key!r}): {text}")  # fmt: skip
        report.entries += 1
        report.head_seq, report.head_hash = entry.seq, stored
        prev = stored
    return report
