"""Ledger integrity on real PostgreSQL: keys that belong to their member, the hash
chain that catches a superuser's consistent rewrite, an append-only audit_log, the
chain under concurrency, and migration 0004 chaining a 0003 ledger."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from corec_tasks.db import libpq_url
from corec_tasks.runtime import reset as reset_runtime
from corec_tasks.settings import Settings, load_settings
from corec_tasks.storage.migrate import upgrade
from plugins.capital_pool import chain
from plugins.capital_pool.config import load_config
from plugins.capital_pool.ledger import Ledger
from plugins.capital_pool.service import CapitalPool
from tests.conftest import DATA

pytestmark = pytest.mark.integration
#: The principal audited for the actions of these tests.
OP = "operator:tests"


def _sql(pool: CapitalPool) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq_url(pool.settings.database_url), autocommit=True)


def _links(pool: CapitalPool) -> list[tuple[int, str, str]]:
    with _sql(pool) as conn:
        return conn.execute("SELECT seq, prev_hash, hash FROM capital_ledger "
                            "ORDER BY seq").fetchall()  # fmt: skip


@pytest.fixture()
def cli(capital_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``corec ...`` as typed, on the test's pool (capital_pool enabled)."""
    from corec_tasks.cli import main

    monkeypatch.setenv("COREC_CONFIG", str(DATA / "capital_config.json"))
    monkeypatch.setenv("COLUMNS", "240")
    reset_runtime()

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    yield run
    reset_runtime()


# (1) keys belong to their member ------------------------------------------------------


def test_another_members_key_neither_reveals_nor_blocks_anything(pool: CapitalPool) -> None:
    alice = pool.contribute("alice", "200.00", "alice-k-1", principal=OP)
    assert alice["ok"]
    # Bob reusing alice's key gets his own fresh action, and learns nothing of hers.
    bob = pool.contribute("bob", "150", "alice-k-1", principal=OP)
    assert bob["ok"] and bob["user_id"] == "bob" and "replayed" not in bob
    rest = json.dumps({k: v for k, v in bob.items() if k != "idempotency_key"})
    assert "alice" not in rest and "200" not in rest
    # Bob taking alice's next key first, with a refused $1, blocks nothing of hers.
    refused = pool.contribute("bob", "1", "alice-k-2", principal=OP)
    assert not refused["ok"] and "minimum contribution" in refused["error"]
    later = pool.contribute("alice", "300", "alice-k-2", principal=OP)
    assert later["ok"] and later["user_id"] == "alice" and "replayed" not in later
    # Each member's key replays only their own first result.
    again = pool.contribute("bob", "1", "alice-k-2", principal=OP)
    assert again["replayed"] and again["error"] == refused["error"]
    assert pool.contribute("alice", "300", "alice-k-2", principal=OP)["replayed"]
    # Reusing one's own key for another action: the refusal names no member.
    other = pool.contribute("bob", "999", "alice-k-1", principal=OP)
    assert "already used for a different action (contribute of 150.00)" in other["error"]
    assert other["error"] == (
        "idempotency_key 'alice-k-1' was already used for a different "
        "action (contribute of 150.00); use a new key for a new action"
    )
    status = pool.status(use_cache=False)
    assert status["members"]["alice"]["contributed"] == "500.00"
    assert status["members"]["bob"]["contributed"] == "150.00"
    assert pool.verify() == {"ok": True, "problems": []}


def test_a_batch_scopes_keys_by_member_too(pool: CapitalPool) -> None:
    results = pool.ledger.apply_batch([
        ("contribute", "alice", "500", "k"),
        ("contribute", "bob", "400", "k"),      # bob's own "k": applied
        ("contribute", "bob", "400", "k"),      # bob's repeat: replayed
        ("contribute", "carol", "5", "k"),      # carol's refused "k"
    ], principal=OP)  # fmt: skip
    assert [r["ok"] for r in results] == [True, True, True, False]
    assert results[2]["replayed"] and "replayed" not in results[1]
    assert pool.contribute("carol", "100", "j", principal=OP)["ok"]
    with _sql(pool) as conn:
        owners = conn.execute("SELECT owner, idempotency_key, ok FROM capital_actions "
                              "ORDER BY owner, idempotency_key").fetchall()  # fmt: skip
    assert owners == [("alice", "k", True), ("bob", "k", True), ("carol", "j", True),
                      ("carol", "k", False)]  # fmt: skip
    assert pool.verify()["ok"]


def test_allocation_keys_belong_to_their_operator(pool: CapitalPool) -> None:
    pool.contribute("alice", "10000", "a1", principal=OP)
    # A member's key that looks like an allocation's does not touch the operator's.
    pool.contribute("alice", "100", "allocate:run-1", principal=OP)
    first = pool.ledger.allocate("run-1", None)
    assert first["ok"] and len(first["allocations"]) == 5
    assert pool.ledger.allocate("run-1", None)["replayed"]
    other = pool.ledger.allocate("run-1", None, principal="ops-bob")
    assert other["ok"] and "replayed" not in other and other["allocations"] == []
    with _sql(pool) as conn:
        owners = conn.execute("SELECT owner FROM capital_actions WHERE kind = 'allocate' "
                              "ORDER BY owner").fetchall()  # fmt: skip
    assert owners == [("operator/ops-bob",), ("operator/system",)]
    assert pool.verify()["ok"]


# (2) the audit log is append-only -----------------------------------------------------


def test_audit_log_refuses_update_delete_and_truncate(pool: CapitalPool) -> None:
    with _sql(pool) as conn:
        user = conn.execute(
            "INSERT INTO users (username, password_hash, role, is_active, created_at, "
            "failed_logins) VALUES ('eve', 'x', 'member', true, now(), 0) RETURNING id"
        ).fetchone()
        assert user is not None
        conn.execute("INSERT INTO audit_log (user_id, action, timestamp, details) "
                     "VALUES (%s, 'capital.contribute', now(), '{}')", (user[0],))  # fmt: skip
        for statement in ("UPDATE audit_log SET details = 'nothing happened'",
                          "DELETE FROM audit_log", "TRUNCATE audit_log",
                          # ON DELETE SET NULL would erase who did it: refused as well.
                          "DELETE FROM users WHERE username = 'eve'"):  # fmt: skip
            with pytest.raises(psycopg.errors.RaiseException, match="audit_log is append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)


# (3) the hash chain catches a consistent rewrite ----------------------------------------


def _history(pool: CapitalPool) -> None:
    assert pool.contribute("alice", "1000", "a1", principal=OP)["ok"]
    assert pool.contribute("bob", "500", "b1", principal=OP)["ok"]
    assert pool.contribute("alice", "300", "a2", principal=OP)["ok"]
    assert pool.withdraw("alice", "100", "a3", principal=OP)["ok"]
    alloc = pool.allocate("h1")["allocations"][0]["allocation_id"]
    assert pool.apply_trade("t-1", D("17.00"), D("1"), D("100"), alloc)["ok"]
    assert pool.contribute("bob", "200", "b2", principal=OP)["ok"]


_MOVE_ALICE_TO_BOB = """
SET session_replication_role = replica;
UPDATE capital_ledger SET user_id = 'bob' WHERE user_id = 'alice';
UPDATE contributions SET user_id = 'bob' WHERE user_id = 'alice';
UPDATE withdrawals SET user_id = 'bob' WHERE user_id = 'alice';
UPDATE capital_actions SET owner = 'bob', user_id = 'bob' WHERE owner = 'alice';
UPDATE capital_members b SET units = b.units + a.units,
    contributed = b.contributed + a.contributed, withdrawn = b.withdrawn + a.withdrawn
    FROM capital_members a WHERE a.user_id = 'alice' AND b.user_id = 'bob';
DELETE FROM capital_members WHERE user_id = 'alice';
SET session_replication_role = origin;
"""


def test_a_superusers_consistent_rewrite_is_caught_and_the_first_entry_named(
    pool: CapitalPool, cli: Any
) -> None:
    _history(pool)
    assert pool.verify() == {"ok": True, "problems": []}
    with _sql(pool) as conn:
        conn.execute(_MOVE_ALICE_TO_BOB)
    result = pool.verify()
    # Every balance and invariant still agrees: only the chain sees the rewrite.
    assert result["ok"] is False and len(result["problems"]) == 1
    problem = result["problems"][0]
    assert problem.startswith("ledger entry seq 1 (contribute by bob, key 'a1'): its content "
                              "no longer matches its hash")  # fmt: skip
    assert "(2 later entries also break the chain)" in problem
    shown = cli("capital", "verify")
    assert shown.exit_code == 1 and "ledger entry seq 1 (contribute by bob" in shown.output
    as_json = cli("capital", "verify", "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["problems"] == [problem]


def test_a_rewrite_with_every_hash_recomputed_is_caught_by_a_head_kept_elsewhere(
    pool: CapitalPool, cli: Any
) -> None:
    _history(pool)
    kept = pool.status(use_cache=False)["ledger"]["hash"]
    assert cli("capital", "verify", "--head", kept).exit_code == 0
    pool.contribute("carol", "100", "c1", principal=OP)
    assert pool.verify(head=kept)["ok"]  # later entries leave an earlier head provable
    with _sql(pool) as conn:
        conn.execute(_MOVE_ALICE_TO_BOB)
        conn.execute("SET session_replication_role = replica")
        rows = conn.execute(
            "SELECT seq, created_at, idempotency_key, kind, user_id, ref, cash_delta, "
            "active_delta, units_delta, equity_after, cash_after, active_after, units_after "
            "FROM capital_ledger ORDER BY seq").fetchall()  # fmt: skip
        prev = chain.GENESIS
        for row in rows:  # the whole chain recomputed, as an informed attacker would
            digest = chain.entry_hash(prev, chain.Entry(*row))
            conn.execute("UPDATE capital_ledger SET prev_hash = %s, hash = %s WHERE seq = %s",
                         (prev, digest, row[0]))  # fmt: skip
            prev = digest
        conn.execute("UPDATE pool_state SET head_hash = %s", (prev,))
    # The chain alone cannot tell; the MACs can (each covers its prev_hash, so every
    # entry from the first rewritten one fails), and so can the head kept elsewhere.
    plain = pool.verify()
    assert plain["ok"] is False and plain["first_failure"] == {
        "seq": 1, "kind": "contribute", "why": "bad MAC"}  # fmt: skip
    assert any(p.startswith("ledger entry seq 1 (contribute by bob, key 'a1'): bad MAC")
               for p in plain["problems"])  # fmt: skip
    found = pool.verify(head=kept)
    assert found["ok"] is False
    assert f"head {kept} is not in the intact chain: an entry up to it was rewritten, or it " \
        "is not this pool's head" in found["problems"]
    shown = cli("capital", "verify", "--head", kept)
    assert shown.exit_code == 1 and "is not in the intact chain" in shown.output
    bad = pool.verify(head="not-a-hash")
    assert bad["ok"] is False and "64 lowercase hex" in bad["error"]


def test_pool_state_pointing_at_another_head_is_caught(pool: CapitalPool) -> None:
    _history(pool)
    with _sql(pool) as conn:
        conn.execute("UPDATE pool_state SET head_hash = %s", ("0" * 63 + "1",))
    problems = pool.verify()["problems"]
    assert any("pool_state's head_hash" in p for p in problems)


# (4) status shows the head ------------------------------------------------------------


def test_status_shows_the_head_hash_and_entry_count(pool: CapitalPool, cli: Any) -> None:
    empty = pool.status(use_cache=False)["ledger"]
    assert empty == {"entries": 0, "seq": 0, "hash": chain.GENESIS}
    _history(pool)
    links = _links(pool)
    head = pool.status(use_cache=False)["ledger"]
    n = len(links)  # 4 client actions, 5 allocations, a trading result, a contribution
    assert n == 11
    assert head == {"entries": n, "seq": n, "hash": links[-1][2]}
    assert pool.status()["ledger"] == head  # cached too
    shown = cli("capital", "status", "--no-cache")
    assert shown.exit_code == 0 and links[-1][2] in shown.output
    assert "ledger entries" in shown.output
    verified = cli("capital", "verify")
    assert verified.exit_code == 0
    assert f"hash chain intact over {n} entries (head seq {n}, hash {links[-1][2]})" in " ".join(
        verified.output.split()
    )


# (5) the chain under concurrency ------------------------------------------------------


def test_the_chain_stays_linear_under_concurrent_writers(capital_settings: Settings) -> None:
    config = load_config()
    errors: list[BaseException] = []
    start = threading.Barrier(7)

    def member(n: int) -> None:
        ledger = Ledger(capital_settings.database_url, config)
        try:
            start.wait()
            user = f"m{n}"
            for i in range(20):
                if n % 2 and i % 5 == 0:  # odd members also send batches
                    out = ledger.apply_batch([("contribute", user, "100", f"b{i}-{j}")
                                              for j in range(3)], principal=OP)  # fmt: skip
                    assert all(r["ok"] for r in out), out
                elif i % 4 == 3:
                    # The operator's allocations may leave no free cash at that moment:
                    # a refusal by that rule is a legal outcome (and writes no entry).
                    out = ledger.withdraw(user, "50", f"w{i}", principal=OP)
                    assert out["ok"] or "free cash" in out["error"], out
                else:
                    assert ledger.contribute(user, "200", f"c{i}", principal=OP)["ok"]
        except BaseException as exc:
            errors.append(exc)
        finally:
            ledger.close()

    def operator() -> None:
        ledger = Ledger(capital_settings.database_url, config)
        try:
            start.wait()
            for i in range(10):
                ledger.allocate(f"run-{i}", None)
                ledger.apply_trade(f"t-{i}", D("1.50"), D("1"), D("10"), f"run-{i}:0")
        except BaseException as exc:
            errors.append(exc)
        finally:
            ledger.close()

    threads = [threading.Thread(target=member, args=(n,)) for n in range(6)]
    threads.append(threading.Thread(target=operator))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    pool = CapitalPool(capital_settings, config)
    try:
        assert pool.verify() == {"ok": True, "problems": []}
        links = _links(pool)
        assert [s for s, _, _ in links] == list(range(1, len(links) + 1))
        assert all(links[i][1] == links[i - 1][2] for i in range(1, len(links)))
        assert links[0][1] == chain.GENESIS and len(links) > 6 * 20
    finally:
        pool.close()


# (6) migration 0004 chains a 0003 ledger ----------------------------------------------


@pytest.fixture()
def url_0003(servers: dict[str, str], run_id: str) -> Iterator[str]:
    """A fresh database migrated to capital_pool's 0002 and aaa's 0003 (keys global,
    no chain): the old linear chain's 0003."""
    from sqlalchemy.engine import make_url

    admin = libpq_url(servers["database_url"])
    name = f"corec_t_{run_id}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(servers["database_url"]).set(database=name).render_as_string(False)
    try:
        upgrade(url, "0002")
        upgrade(url, "0003")
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_STATE_0003 = """
INSERT INTO capital_ledger (idempotency_key, kind, user_id, ref, cash_delta, active_delta,
    units_delta, equity_after, cash_after, active_after, units_after) VALUES
  ('k1', 'contribute', 'alice', NULL, 1000, 0, 1000, 1000, 1000, 0, 1000),
  ('k2', 'contribute', 'bob', NULL, 500, 0, 500, 1500, 1500, 0, 1500),
  ('trade:t-1', 'trade_result', NULL, 't-1', 30, 0, 0, 1530, 1530, 0, 1500);
INSERT INTO contributions (user_id, amount, units, nav, idempotency_key) VALUES
  ('alice', 1000, 1000, 1, 'k1'), ('bob', 500, 500, 1, 'k2');
INSERT INTO capital_members (user_id, units, contributed, withdrawn) VALUES
  ('alice', 1000, 1000, 0), ('bob', 500, 500, 0);
INSERT INTO capital_trade_results (trade_id, profit, quantity, price) VALUES ('t-1', 30, 1, 1);
INSERT INTO capital_actions (idempotency_key, kind, user_id, amount, ok, result) VALUES
  ('k1', 'contribute', 'alice', 1000, true, '{"ok": true, "user_id": "alice"}'),
  ('k2', 'contribute', 'bob', 500, true, '{"ok": true, "user_id": "bob"}'),
  ('allocate:run-1', 'allocate', NULL, NULL, true, '{"ok": true, "action": "allocate"}');
UPDATE pool_state SET equity = 1530, cash = 1530, units = 1500,
    seq = (SELECT max(seq) FROM capital_ledger);
"""


@pytest.mark.config("capital_config.json")  # capital_pool's branch is upgraded to its head
def test_migration_0004_hashes_a_0003_ledger_in_order_and_scopes_its_keys(
    url_0003: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(libpq_url(url_0003), autocommit=True) as conn:
        conn.execute(_STATE_0003)
    upgrade(url_0003)
    monkeypatch.setenv("DATABASE_URL", url_0003)
    pool = CapitalPool(load_settings(), load_config())
    try:
        links = _links(pool)
        assert [s for s, _, _ in links] == [1, 2, 3] and links[0][1] == chain.GENESIS
        assert links[1][1] == links[0][2] and links[2][1] == links[1][2]
        with _sql(pool) as conn:
            head = conn.execute("SELECT head_hash FROM pool_state").fetchone()
            owners = conn.execute("SELECT owner, idempotency_key FROM capital_actions "
                                  "ORDER BY owner").fetchall()  # fmt: skip
        assert head == (links[-1][2],)
        assert owners == [("alice", "k1"), ("bob", "k2"), ("operator/system", "allocate:run-1")]
        # Written before ledger MACs: red until an operator seals them (test_ledger_mac).
        assert "not sealed" in pool.verify()["problems"][0]
        assert pool.ledger.seal(OP)["sealed"]
        assert pool.verify() == {"ok": True, "problems": []}
        # Old keys still replay for their owner; another member's use is fresh.
        assert pool.contribute("alice", "1000", "k1", principal=OP)["replayed"]
        assert pool.ledger.allocate("run-1", None)["replayed"]
        fresh = pool.contribute("bob", "100", "k1", principal=OP)
        assert fresh["ok"] and "replayed" not in fresh
        links = _links(pool)
        assert links[-1][0] == 4 and links[-1][1] == links[-2][2]
        assert pool.verify() == {"ok": True, "problems": []}
    finally:
        pool.close()


def test_ledger_refuses_a_user_id_with_a_trailing_newline() -> None:
    """`$` matches before a final newline; the ledger's own check must not."""
    from plugins.capital_pool.ledger import InputError, check_user

    assert check_user("alice") == "alice"
    for bad in ("alice\n", "alice\x00", " alice", "al ice", "a" * 129):
        with pytest.raises(InputError) as err:
            check_user(bad)
        assert len(str(err.value)) < 200
