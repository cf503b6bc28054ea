"""The daily settlement on real PostgreSQL: one statement per member and day however
often it runs, the worked example of the README, the CLI, the beat entry.

Time is an input: every test settles at the fixed ``NOW`` (or a clock it builds), never
at the wall clock, so a run that crosses midnight changes nothing (three of these once
failed because the module fixed its days at import and the code asked the clock later).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from corec_tasks.db import libpq_url
from corec_tasks.runtime import reset as reset_runtime
from corec_tasks.settings import Settings, load_settings
from plugins.capital_pool import chain, ledger_key, seal, settlement
from plugins.capital_pool.config import load_config
from plugins.capital_pool.service import CapitalPool
from tests.integration.conftest import fresh_migrated_database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: When these tests settle: a fixed afternoon, far from any real run's date.
NOW = datetime(2027, 3, 1, 15, 30, tzinfo=UTC)
TODAY = NOW.date()
DAY1, DAY2 = TODAY - timedelta(days=2), TODAY - timedelta(days=1)


@pytest.fixture()
def settle_settings(
    servers: dict[str, str],
    run_id: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Settings]:
    """A fresh migrated database, with capital_pool enabled (its `corec capital` commands)."""
    from corec_tasks.storage.migrate import current

    config = json.loads((ROOT / "tests/data/small_config.json").read_text())
    config["plugins"].append({"name": "capital_pool", "enabled": True, "config_path":
                              str(ROOT / "plugins/capital_pool/capital_pool.yaml")})  # fmt: skip
    path = tmp_path / "corec_config.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("COREC_CONFIG", str(path))
    with fresh_migrated_database(servers, run_id) as url:
        assert "0007_ledger_mac" in (current(url) or "")
        monkeypatch.setenv("DATABASE_URL", url)
        reset_runtime()
        try:
            yield load_settings()
        finally:
            reset_runtime()


@pytest.fixture()
def pool(settle_settings: Settings) -> Iterator[CapitalPool]:
    p = CapitalPool(settle_settings, load_config())
    yield p
    p.close()


def _move_to(settings: Settings, day: date, after_seq: int) -> None:
    """Date the ledger's entries after ``after_seq`` to noon of ``day``: a test cannot
    wait for midnight. This rewrites hashed fields, so the chain is linked and MACed
    again from there with the test's ledger key (as the ledger would have written it):
    a ledger refuses to write after a head whose MAC fails."""
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        conn.execute("ALTER TABLE capital_ledger DISABLE TRIGGER capital_ledger_append_only")
        conn.execute("UPDATE capital_ledger SET created_at = %s + seq * interval '1 second' "
                     "WHERE seq > %s",
                     (datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12),
                      after_seq))  # fmt: skip
        key = ledger_key.load_key(settings)
        rows = conn.execute(f"SELECT {seal.COLUMNS} FROM capital_ledger ORDER BY seq").fetchall()
        prev = chain.GENESIS
        for row in rows:
            digest, mac = chain.link(key, prev, chain.Entry(*row[:13]))
            conn.execute("UPDATE capital_ledger SET prev_hash = %s, hash = %s, mac = %s "
                         "WHERE seq = %s", (prev, digest, mac, row[0]))  # fmt: skip
            prev = digest
        conn.execute("UPDATE pool_state SET head_hash = %s", (prev,))
        conn.execute("ALTER TABLE capital_ledger ENABLE TRIGGER capital_ledger_append_only")


def _worked_example(pool: CapitalPool) -> None:
    """Day 1: alice puts in 1000, bob 3000. Day 2: a trade makes 400 (NAV 1.00 -> 1.10),
    then alice takes out 110 (100 units)."""
    assert pool.contribute("alice", "1000.00", "a1", principal="operator:test")["ok"]
    assert pool.contribute("bob", "3000.00", "b1", principal="operator:test")["ok"]
    _move_to(pool.settings, DAY1, 0)
    alloc = pool.allocate("day2")["allocations"][0]["allocation_id"]  # 480.00 of 4,000
    assert pool.apply_trade("t1", D("400.00"), D("1"), D("1"), alloc)["ok"]
    assert pool.withdraw("alice", "110.00", "a2", principal="operator:test")["ok"]
    _move_to(pool.settings, DAY2, 2)


def _count(settings: Settings) -> tuple[int, int]:
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        a = conn.execute("SELECT count(*) FROM capital_statements").fetchone()
        b = conn.execute("SELECT count(*) FROM capital_pool_days").fetchone()
    assert a and b
    return a[0], b[0]


def test_the_worked_example_and_a_rerun_writes_nothing(pool: CapitalPool) -> None:
    _worked_example(pool)
    with settlement.connect(pool.settings.database_url) as conn:
        first = settlement.settle_missing(conn, NOW)
        assert [r["day"] for r in first] == [str(DAY1), str(DAY2)]
        assert _count(pool.settings) == (4, 2)
        # Twice more, and one day by name: nothing new, nothing changed.
        again = settlement.settle_missing(conn, NOW)
        assert again == []  # every finished day has its pool row
        assert settlement.settle_day(conn, DAY2, NOW)["statements"] == 0
        assert _count(pool.settings) == (4, 2)
        a1 = settlement.statement(conn, "alice", DAY1)
        a2 = settlement.statement(conn, "alice", DAY2)
        b2 = settlement.statement(conn, "bob", DAY2)
        latest = settlement.statement(conn, "alice")
        day2 = settlement.pool_day(conn, DAY2)
    assert a1 and a2 and b2 and latest == a2
    assert a1.to_json() | {"day": "-"} == {
        "user_id": "alice", "day": "-", "units": "1000.00000000", "nav": "1.0000000000",
        "value_start": "0.00", "value": "1000.00", "contributed_day": "1000.00",
        "withdrawn_day": "0.00", "contributed": "1000.00", "withdrawn": "0.00",
        "profit_day": "0.00", "roi_day": "0.00000000", "roi_to_date": "0.00000000"}  # fmt: skip
    assert a2.to_json() | {"day": "-"} == {
        "user_id": "alice", "day": "-", "units": "900.00000000", "nav": "1.1000000000",
        "value_start": "1000.00", "value": "990.00", "contributed_day": "0.00",
        "withdrawn_day": "110.00", "contributed": "1000.00", "withdrawn": "110.00",
        "profit_day": "100.00", "roi_day": "0.10000000", "roi_to_date": "0.10000000"}  # fmt: skip
    assert (b2.value, b2.profit_day, b2.roi_day) == (D("3300.00"), D("300.00"), D("0.1"))
    # 2 contributions, 5 allocations, the trade, the withdrawal: seq 9
    assert day2 == {"day": str(DAY2), "seq": 9, "nav": "1.1000000000", "equity": "4290.00",
                    "units": "3900.00000000", "members": 2}  # fmt: skip


def test_a_day_is_settled_once_even_by_two_at_once(pool: CapitalPool) -> None:
    """Two connections settle the same day concurrently: one statement per member."""
    import threading

    _worked_example(pool)
    results: list[dict[str, object]] = []

    def run() -> None:
        with settlement.connect(pool.settings.database_url) as conn:
            results.append(settlement.settle_day(conn, DAY2, NOW))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and sum(int(str(r["statements"])) for r in results) == 2
    assert _count(pool.settings) == (2, 1)


def test_today_is_not_settled_and_a_statement_cannot_be_changed(pool: CapitalPool) -> None:
    assert pool.contribute("alice", "1000.00", "a1", principal="operator:test")["ok"]
    _move_to(pool.settings, TODAY, 0)  # the pool opens today, whenever the test runs
    with settlement.connect(pool.settings.database_url) as conn:
        out = settlement.settle_day(conn, TODAY, NOW)
        assert not out["ok"] and "is not over" in out["error"]
        # Shortly after midnight, within the grace, yesterday is not settled either.
        just_after = datetime.combine(TODAY, datetime.min.time(), UTC) + timedelta(minutes=1)
        assert not settlement.settle_day(conn, DAY2, now=just_after)["ok"]
        # A day before the pool existed: nothing to write.
        assert settlement.settle_day(conn, DAY1, NOW)["skipped"]
    _move_to(pool.settings, DAY2, 0)
    with settlement.connect(pool.settings.database_url) as conn:
        assert settlement.settle_day(conn, DAY2, NOW)["statements"] == 1
        with pytest.raises(psycopg.errors.RaiseException, match="written once"):
            conn.execute("UPDATE capital_statements SET value = 0")
        conn.rollback()
        with pytest.raises(psycopg.errors.RaiseException, match="written once"):
            conn.execute("DELETE FROM capital_pool_days")


class Ticks:
    """A clock that answers each call with the next of ``times`` and fails when none is
    left: a run that asked it twice would see two instants, and the runs after it would
    find the clock empty."""

    def __init__(self, *times: datetime) -> None:
        self.times = list(times)

    def __call__(self) -> datetime:
        assert self.times, "the clock was asked more often than once per run"
        return self.times.pop(0)


def test_runs_across_midnight_settle_the_right_days(pool: CapitalPool) -> None:
    """The clock crosses midnight between runs (23:59:59.9, then 00:00:00.1 UTC) and the
    grace ends later (00:05): today is refused before and after midnight, by the CLI and
    the task alike, and is settled, once, only when its grace is over."""
    from corec_tasks.cli import main
    from plugins.capital_pool.settlement_tasks import run

    _worked_example(pool)
    assert pool.contribute("carol", "500.00", "c1", principal="operator:test")["ok"]
    _move_to(pool.settings, TODAY, 4)  # carol's entry is today's
    midnight = datetime.combine(TODAY + timedelta(days=1), datetime.min.time(), UTC)
    tick, over = timedelta(milliseconds=100), midnight + settlement.GRACE
    before, after, in_grace = midnight - tick, midnight + tick, over - tick
    clock = Ticks(before, before, after, after, in_grace, over, over)
    url, runner = pool.settings.database_url, CliRunner()

    def cli(*args: str) -> tuple[int, dict[str, Any]]:
        done = runner.invoke(main, ["capital", "settle", *args, "--json"], obj={"clock": clock})
        return done.exit_code, json.loads(done.output)

    code, first = cli()  # 23:59:59.9: the two finished days
    assert code == 0 and [d["day"] for d in first["days"]] == [str(DAY1), str(DAY2)]
    for _ in (before, after):  # today, either side of midnight
        code, today = cli("--day", str(TODAY))
        assert code == 1 and "is not over" in today["days"][0]["error"]
    assert cli() == (0, {"ok": True, "days": []})  # 00:00:00.1: within the grace
    assert run(url, None, clock()) == {"ok": True, "days": []}  # 00:04:59.9: still
    assert _count(pool.settings) == (4, 2)
    settled = run(url, None, clock())  # 00:05:00: the grace is over
    assert [(d["day"], d["statements"]) for d in settled["days"]] == [(str(TODAY), 3)]
    code, tomorrow = cli("--day", str(TODAY + timedelta(days=1)))
    assert code == 1 and "is not over" in tomorrow["days"][0]["error"]
    assert clock.times == [] and _count(pool.settings) == (7, 3)
    with settlement.connect(url) as conn:
        carol = settlement.statement(conn, "carol", TODAY)
    # 500 buys 454.54545454 units at NAV 1.10, worth 499.99 rounded down to the cent.
    assert carol and (carol.units, carol.value, carol.contributed_day) == (
        D("454.54545454"), D("499.99"), D("500.00"))  # fmt: skip


def test_cli_statement_json_and_the_task(pool: CapitalPool) -> None:
    from corec_tasks.cli import main
    from plugins.capital_pool.settlement_tasks import run, settle

    _worked_example(pool)
    assert settle("2026-13-01") == {"ok": False, "error": "day '2026-13-01' is not a date"}
    assert not settle("yesterday")["ok"]
    out = run(pool.settings.database_url, None, NOW)  # the task's body, at NOW
    assert out["ok"] and [d["statements"] for d in out["days"]] == [2, 2]
    runner = CliRunner()
    shown = runner.invoke(main, ["capital", "statement", "alice", "--day", str(DAY2), "--json"])
    assert shown.exit_code == 0, shown.output
    got = json.loads(shown.output)
    assert (got["value"], got["roi_day"], got["roi_to_date"]) == ("990.00", "0.10000000",
                                                                  "0.10000000")  # fmt: skip
    table = runner.invoke(main, ["capital", "statement", "bob"])
    assert table.exit_code == 0 and "3300.00" in table.output
    missing = runner.invoke(main, ["capital", "statement", "carol", "--day", str(DAY2)])
    assert missing.exit_code == 1 and "no statement for carol" in missing.output
    bad = runner.invoke(main, ["capital", "statement", "alice", "--day", "2026-1-1"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
    rerun = runner.invoke(main, ["capital", "settle", "--day", str(DAY2), "--json"],
                          obj={"clock": lambda: NOW})  # fmt: skip
    assert rerun.exit_code == 0 and json.loads(rerun.output)["days"][0]["statements"] == 0


def test_the_shipped_beat_entry_settles_every_15_minutes(settle_settings: Settings) -> None:
    from corec_tasks.discovery import enabled
    from corec_tasks.wiring import beat_entries

    entries = beat_entries(settle_settings, enabled(settle_settings))
    entry = entries["capital-settle"]
    assert entry["task"] == "capital_pool.settle"
    assert float(entry["schedule"]) == 900.0 and entry["options"]["expires"] == 900.0
    assert timedelta(minutes=5) == settlement.GRACE and settlement.BACKFILL_DAYS == 7


def test_statements_are_read_from_database_read_url_and_the_ledger_never_is(
    pool: CapitalPool, settle_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DATABASE_READ_URL (a replica) serves `corec capital statement`; contributions
    and the pool's status still read and write DATABASE_URL. The replica here is a copy
    of the primary taken after settling, from which alice's statements are then removed,
    so the answer shows which database it came from."""
    from corec_tasks.cli import main
    from plugins.capital_pool.settlement_tasks import run

    _worked_example(pool)
    assert run(settle_settings.database_url, None, NOW)["ok"]
    pool.close()
    primary = settle_settings.database_url
    admin = libpq_url(primary).rsplit("/", 1)[0] + "/postgres"
    name = libpq_url(primary).rsplit("/", 1)[1].split("?")[0]
    replica = f"{name}_replica"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))  # fmt: skip
        conn.execute(f'CREATE DATABASE "{replica}" TEMPLATE "{name}"')
    replica_url = primary.replace(f"/{name}", f"/{replica}")
    try:
        with psycopg.connect(libpq_url(replica_url)) as conn:
            conn.execute("ALTER TABLE capital_statements DISABLE TRIGGER USER")
            conn.execute("DELETE FROM capital_statements WHERE user_id = 'alice'")
        monkeypatch.setenv("DATABASE_READ_URL", replica_url)
        reset_runtime()
        runner = CliRunner()
        alice = runner.invoke(main, ["capital", "statement", "alice", "--day", str(DAY2)])
        assert alice.exit_code == 1 and "DATABASE_READ_URL, which may lag" in alice.output
        bob = runner.invoke(main, ["capital", "statement", "bob", "--day", str(DAY2), "--json"])
        assert bob.exit_code == 0 and json.loads(bob.output)["value"] == "3300.00", bob.output
        # The ledger: written and read on the primary only.
        moved = runner.invoke(main, ["capital", "contribute", "carol", "500.00", "--key", "c1",
                                     "--json"])  # fmt: skip
        assert moved.exit_code == 0 and json.loads(moved.output)["ok"], moved.output
        for url, members in ((primary, 1), (replica_url, 0)):
            with psycopg.connect(libpq_url(url)) as conn:
                row = conn.execute("SELECT count(*) FROM capital_members "
                                   "WHERE user_id = 'carol'").fetchone()  # fmt: skip
            assert row == (members,), url
        # History may lag too: it reads the replica, where carol's entry is not.
        lagging = runner.invoke(main, ["capital", "history", "--json"])
        assert lagging.exit_code == 0, lagging.output
        users = {e["user_id"] for e in json.loads(lagging.output)["entries"]}
        assert "bob" in users and "carol" not in users, users
        monkeypatch.delenv("DATABASE_READ_URL")
        reset_runtime()
        again = runner.invoke(main, ["capital", "statement", "alice", "--day", str(DAY2)])
        assert again.exit_code == 0 and "990.00" in again.output, again.output
        current = runner.invoke(main, ["capital", "history", "--json"])
        assert "carol" in {e["user_id"] for e in json.loads(current.output)["entries"]}
    finally:
        reset_runtime()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{replica}" WITH (FORCE)')
