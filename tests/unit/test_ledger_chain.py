"""The ledger's hash chain as pure functions: canonical text, hashes, the walk."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D
from pathlib import Path
from types import ModuleType

import pytest

from plugins.capital_pool import chain
from plugins.capital_pool.chain import GENESIS, Entry, decimal_str, entry_hash, time_str, walk

ROOT = Path(__file__).resolve().parents[2]
WHEN = datetime(2026, 11, 30, 15, 6, 40, 123456, tzinfo=UTC)


def _entry(seq: int = 1, **changes: object) -> Entry:
    base = Entry(seq, WHEN, f"k{seq}", "contribute", "alice", None, D("100.00"), D("0.00"),
                 D("100.00000000"), D("100.00"), D("100.00"), D("0.00"),
                 D("100.00000000"))  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _chain(entries: list[Entry]) -> list[tuple[Entry, str, str]]:
    rows, prev = [], GENESIS
    for e in entries:
        digest = entry_hash(prev, e)
        rows.append((e, prev, digest))
        prev = digest
    return rows


@pytest.mark.parametrize(
    ("value", "text"),
    [(D("100.00"), "100"), (D("100.50"), "100.5"), (D("-0.00"), "0"), (D("0"), "0"),
     (D("1E+2"), "100"), (D("0.00000001"), "0.00000001"), (D("-250.50000000"), "-250.5"),
     (D("123456789012345678.99"), "123456789012345678.99")],
)  # fmt: skip
def test_decimals_read_back_from_numeric_hash_like_the_values_computed(value: D, text: str) -> None:
    assert decimal_str(value) == text


def test_non_finite_amounts_and_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        decimal_str(D("NaN"))
    with pytest.raises(ValueError, match="timezone"):
        time_str(datetime(2026, 1, 1))


def test_times_are_utc_iso_with_microseconds_whatever_the_session_zone() -> None:
    madrid = WHEN.astimezone(timezone(timedelta(hours=1)))
    assert time_str(madrid) == time_str(WHEN) == "2026-11-30T15:06:40.123456+00:00"
    assert time_str(WHEN.replace(microsecond=0)) == "2026-11-30T15:06:40.000000+00:00"


def test_the_canonical_text_is_the_documented_json_array() -> None:
    text = chain.canonical(GENESIS, _entry())
    assert json.loads(text) == ["capital_ledger/v1", GENESIS, 1, "2026-11-30T15:06:40.123456+00:00",
                                "k1", "contribute", "alice", None, "100", "0", "100", "100",
                                "100", "0", "100"]  # fmt: skip
    assert b" " not in text
    # Pinned: a change of the serialisation would orphan every stored hash.
    assert entry_hash(GENESIS, _entry()) == (
        "060ff3cdd5e1b9690ca85f203b383f2e9a97bf4d419ca80ead91b2643fa1259e"
    )


@pytest.mark.parametrize(
    "change",
    [{"seq": 2}, {"created_at": WHEN + timedelta(microseconds=1)}, {"idempotency_key": "k2"},
     {"kind": "withdraw"}, {"user_id": "bob"}, {"user_id": None}, {"ref": "x"},
     {"cash_delta": D("100.01")}, {"active_delta": D("0.01")},
     {"units_delta": D("100.00000001")}, {"equity_after": D("99.99")},
     {"cash_after": D("1")}, {"active_after": D("1")}, {"units_after": D("1")}],
)  # fmt: skip
def test_every_field_is_in_the_hash(change: dict[str, object]) -> None:
    assert entry_hash(GENESIS, _entry(**change)) != entry_hash(GENESIS, _entry())


def test_the_previous_hash_is_in_the_hash() -> None:
    assert entry_hash("1" * 64, _entry()) != entry_hash(GENESIS, _entry())


def test_an_intact_chain_walks_clean_to_its_head() -> None:
    rows = _chain([_entry(i) for i in range(1, 6)])
    report = walk(rows, look_for=[rows[2][2], "f" * 64])
    assert report.first_break is None and report.broken == 0
    assert (report.entries, report.head_seq, report.head_hash) == (5, 5, rows[-1][2])
    assert report.found == {rows[2][2]}
    assert walk([]).head_hash == GENESIS


def test_a_changed_entry_is_named_and_counted_once() -> None:
    rows = _chain([_entry(i) for i in range(1, 6)])
    moved = dataclasses.replace(rows[1][0], user_id="bob")
    rows[1] = (moved, rows[1][1], rows[1][2])
    report = walk(rows, look_for=[rows[0][2], rows[3][2]])
    assert report.broken == 1
    assert report.first_break is not None
    assert report.first_break.startswith("ledger entry seq 2 (contribute by bob, key 'k2')")
    assert "content no longer matches its hash" in report.first_break
    # A head kept before the change still proves its prefix; one after it does not.
    assert report.found == {rows[0][2]}


def test_a_removed_or_reordered_entry_breaks_the_link() -> None:
    rows = _chain([_entry(i) for i in range(1, 5)])
    report = walk(rows[:1] + rows[2:])
    assert report.first_break is not None and "seq 3" in report.first_break
    assert "prev_hash" in report.first_break
    swapped = walk([rows[1], rows[0], *rows[2:]])
    assert swapped.first_break is not None and "seq 2" in swapped.first_break


def _migration() -> ModuleType:
    path = ROOT / "plugins" / "capital_pool" / "migrations" / "0004_ledger_integrity.py"
    spec = importlib.util.spec_from_file_location("migration_0004", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migrations_frozen_copy_hashes_like_the_chain() -> None:
    m = _migration()
    assert m.GENESIS == GENESIS
    for e in [_entry(), _entry(7, user_id=None, kind="trade_result", ref="t-1",
                               cash_delta=D("-12.34"), units_delta=D("0"),
                               idempotency_key="trade:ü-1"),
              _entry(9, created_at=WHEN.astimezone(timezone(timedelta(hours=-5))))]:  # fmt: skip
        row = dataclasses.astuple(e)
        assert m._hash("a" * 64, row) == entry_hash("a" * 64, e)


# MACs (capital_ledger/mac/v1) ----------------------------------------------------------

KEY = b"k" * 32


def _macced(entries: list[Entry], key: bytes = KEY) -> list[chain.Row]:
    return [(e, prev, digest, chain.entry_mac(key, prev, e)) for e, prev, digest in _chain(entries)]


def test_the_mac_is_the_documented_hmac_of_the_hashed_bytes() -> None:
    import hashlib
    import hmac

    body = chain.canonical(GENESIS, _entry())
    assert chain.entry_mac(KEY, GENESIS, _entry()) == hmac.new(
        KEY, b"capital_ledger/mac/v1\n" + body, hashlib.sha256).hexdigest()  # fmt: skip
    assert chain.link(KEY, GENESIS, _entry()) == (entry_hash(GENESIS, _entry()),
                                                  chain.entry_mac(KEY, GENESIS, _entry()))
    assert chain.seal_mac(KEY, 3, "a" * 64) == hmac.new(
        KEY, b'capital_ledger/seal/v1\n[3,"' + b"a" * 64 + b'"]', hashlib.sha256).hexdigest()
    assert len(chain.key_id(KEY)) == 16 and chain.key_id(KEY) != chain.key_id(b"j" * 32)


def test_walk_with_a_key_names_the_first_missing_or_bad_mac() -> None:
    entries = [_entry(1), _entry(2, user_id="bob"), _entry(3)]
    good = _macced(entries)
    assert walk(good, key=KEY).first_break is None
    missing = [*good[:2], (*good[2][:3], None)]
    report = walk(missing, key=KEY)
    assert (report.first_seq, report.first_kind, report.first_reason) == (3, "contribute",
                                                                          "missing MAC")
    assert report.first_break is not None and "missing MAC: it carries no MAC" in report.first_break
    bad = [good[0], (*good[1][:3], "0" * 64), good[2]]
    report = walk(bad, key=KEY)
    assert (report.first_seq, report.first_reason, report.broken) == (2, "bad MAC", 1)
    wrong = walk(good, key=b"j" * 32)
    assert wrong.macs_checked == wrong.macs_bad == 3
    # The legacy range needs no MAC of its own (its seal covers it); after it, one is due.
    legacy = [(e, p, h) for e, p, h, _ in good[:2]] + [good[2]]
    assert walk(legacy, key=KEY, legacy_through=2, hash_at=[2]).first_break is None
    assert walk(legacy, key=KEY, legacy_through=1).first_reason == "missing MAC"
    assert walk(legacy, key=KEY, legacy_through=2, hash_at=[2]).hashes == {2: good[1][2]}
