"""The capital ledger on real PostgreSQL and Redis: idempotency, bad input, results,
allocations, cache, macro fallback, append-only ledger."""

from __future__ import annotations

import base64
import gzip
import json
import time
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest
import redis

from corec_tasks.db import libpq_url
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import DEAD_LETTER
from plugins.capital_pool.consumer import consume_once
from plugins.capital_pool.service import CapitalPool
from plugins.trading.channels import CAPITAL_DATA, MACRO_DATA, TRADING_RESULTS

pytestmark = pytest.mark.integration
#: The principal audited for the actions of these tests.
OP = "operator:tests"


def _state(pool: CapitalPool) -> tuple[Any, ...]:
    """Everything a state change would touch."""
    tables = ("capital_ledger", "contributions", "withdrawals", "capital_members",
              "capital_actions")  # fmt: skip
    with psycopg.connect(libpq_url(pool.settings.database_url)) as conn:
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in tables]
        balances = conn.execute("SELECT equity, cash, active, units FROM pool_state").fetchone()
    return (*counts, balances)


def test_contribute_withdraw_status_and_verify(pool: CapitalPool) -> None:
    assert pool.contribute("alice", "4000.00", "a1", principal=OP)["units"] == "4000.00000000"
    assert pool.contribute("bob", "1000", "b1", principal=OP)["ok"]
    out = pool.withdraw("bob", "250.50", "b2", principal=OP)
    assert out["ok"] and out["units"] == "250.50000000"
    status = pool.status()
    assert status["equity"] == "4749.50" and status["nav"] == "1.0000000000"
    assert status["members"]["bob"] == {"units": "749.50000000", "value": "749.50",
                                        "contributed": "1000.00", "withdrawn": "250.50",
                                        "roi": "0.0000"}  # fmt: skip
    assert set(status) >= {"equity", "cash", "active", "units", "nav", "phase",
                           "risk_per_trade", "vix", "members"}  # fmt: skip
    assert pool.verify() == {"ok": True, "problems": []}
    kinds = [e["kind"] for e in pool.history()["entries"]]
    assert kinds == ["withdraw", "contribute", "contribute"]


def test_a_repeated_key_returns_the_first_result_and_changes_nothing(pool: CapitalPool) -> None:
    first = pool.contribute("alice", "500", "k1", principal=OP)
    before = _state(pool)
    again = pool.contribute("alice", "500", "k1", principal=OP)
    assert again.pop("replayed") is True and again == first
    assert _state(pool) == before
    other = pool.contribute("alice", "600", "k1", principal=OP)
    assert not other["ok"] and "already used for a different action" in other["error"]
    # A rejected action's key replays its rejection too.
    refused = pool.withdraw("alice", "900", "k2", principal=OP)
    assert not refused["ok"] and "more than this member's value" in refused["error"]
    pool.contribute("alice", "500", "k3", principal=OP)
    assert pool.withdraw("alice", "900", "k2", principal=OP)["error"] == refused["error"]
    assert pool.verify()["ok"]


@pytest.mark.parametrize(
    ("call", "message"),
    [(("contribute", "u", "-5", "k"), "must be positive"),
     (("contribute", "u", "0", "k"), "must be positive"),
     (("contribute", "u", "NaN", "k"), "not a number"),
     (("contribute", "u", "abc", "k"), "not a number"),
     (("contribute", "u", "1000000000000", "k"), "above the maximum"),
     (("contribute", "u", "100.005", "k"), "more than 2 decimal places"),
     (("contribute", "u", "100", None), "idempotency_key is required"),
     (("contribute", "u", "100", ""), "idempotency_key is required"),
     (("contribute", "", "100", "k"), "user_id"),
     (("contribute", "u", "99.99", "k"), "minimum contribution"),
     (("withdraw", "nobody", "100", "k"), "holds no units"),
     (("withdraw", "u", "abc", "k"), "not a number")],
)  # fmt: skip
def test_bad_input_is_refused_with_a_clear_error_and_no_state_change(
    pool: CapitalPool, call: tuple[Any, ...], message: str
) -> None:
    pool.contribute("seed", "1000", "seed-1", principal=OP)
    before = _state(pool)
    kind, *args = call
    result = getattr(pool, kind)(*args, principal=OP)
    assert result["ok"] is False and message in result["error"]
    after = _state(pool)
    # A business rejection records its key (to replay it); nothing else moves.
    assert after[:4] == before[:4] and after[5] == before[5]
    assert pool.verify()["ok"]


def test_withdrawal_limited_to_free_cash_while_allocations_are_open(pool: CapitalPool) -> None:
    pool.contribute("alice", "10000", "a1", principal=OP)
    alloc = pool.allocate("slot-1")
    assert alloc["ok"] and len(alloc["allocations"]) == 5 and alloc["active"] == "6000.00"
    assert alloc["published"] == 5
    refused = pool.withdraw("alice", "100", "w1", principal=OP)
    assert "free cash" in refused["error"]
    # Allocation is idempotent per key: the same run allocates nothing twice.
    assert pool.allocate("slot-1")["allocations"] == alloc["allocations"]
    assert pool.status()["active"] == "6000.00"
    with StreamBus(pool.settings) as bus:
        messages = bus.tail(CAPITAL_DATA, 10)
    assert len(messages) == 5
    assert pool.verify()["ok"]


def _packed(body: dict[str, Any]) -> str:
    return base64.b64encode(gzip.compress(json.dumps(body).encode())).decode()


def test_trading_results_applied_once_and_malformed_ones_dead_lettered(pool: CapitalPool) -> None:
    pool.contribute("alice", "1000", "a1", principal=OP)
    a0, alloc_id, a2 = (a["allocation_id"] for a in pool.allocate("r1")["allocations"][:3])
    assert pool.allocate("r1")["allocations"][1]["allocation_id"] == alloc_id  # replayed
    with StreamBus(pool.settings) as bus:
        bus.publish(TRADING_RESULTS, {"data": _packed({"profit": 50.0, "quantity": 0.001,
                                                       "price": 35000.0,
                                                       "allocation_id": a0})})  # fmt: skip
        bus.publish(TRADING_RESULTS, {"trade_id": "t-1", "profit": "-10.00", "quantity": "1",
                                      "price": "100", "allocation_id": alloc_id})  # fmt: skip
        bus.publish(TRADING_RESULTS, {"trade_id": "t-1", "profit": "-10.00", "quantity": "1",
                                      "price": "100", "allocation_id": alloc_id})  # fmt: skip
        bus.publish(TRADING_RESULTS, {"data": "not base64!"})
        bus.publish(TRADING_RESULTS, {"trade_id": "t-2", "profit": "-5000", "quantity": "1",
                                      "price": "1", "allocation_id": a2})  # fmt: skip
        bus.publish(MACRO_DATA, {"sp500_price": 4500.0, "vix_price": 18.0})
        stats = consume_once(pool)
        assert (stats.applied, stats.duplicates, stats.dead_lettered) == (2, 1, 2)
        dead = bus.dead_letters(10)
        assert len(dead) == 2
        reasons = " | ".join(d["reason"] for d in dead)
        assert "not base64" in reasons and "exceeds the capital at risk" in reasons
        assert bus.pending(TRADING_RESULTS, "capital_pool") == 0
        # Nothing new: a second round applies nothing.
        assert consume_once(pool).applied == 0
    status = pool.status()
    assert status["equity"] == "1040.00"  # +50 (seed payload) -10 (t-1, once)
    assert status["vix"] == "18.0" and status["risk_per_trade"] == "0.0200"
    assert pool.verify()["ok"]
    assert DEAD_LETTER == "corec_dead_letter"


def test_only_signed_trading_results_move_the_nav(pool: CapitalPool) -> None:
    """Anyone who reaches Redis can XADD to trading_results: an unsigned entry, one
    signed with another key, and a signed one whose data was changed are dead-lettered
    (one error alert), and a copy of a signed entry (a new id, the same signature,
    no trade id) is a duplicate; only the genuine result moves the NAV, once."""
    from corec_tasks.streams.names import ALERTS
    from corec_tasks.streams.signing import F_SIG, sign

    pool.contribute("alice", "1000", "a1", principal=OP)
    a0 = pool.allocate("r1")["allocations"][0]["allocation_id"]
    client: Any = redis.Redis.from_url(pool.settings.redis_url)
    key = pool.settings.key(TRADING_RESULTS)
    forged = json.dumps({"trade_id": "f-1", "profit": "100000", "quantity": "1",
                         "price": "1"}).encode()  # fmt: skip
    with StreamBus(pool.settings) as bus:
        assert TRADING_RESULTS in bus.signed_streams
        genuine_id = bus.publish(TRADING_RESULTS, {"data": _packed({
            "profit": 50.0, "quantity": 0.001, "price": 35000.0,
            "allocation_id": a0})})  # fmt: skip
        (genuine,) = client.xrange(key, genuine_id, genuine_id)
        fields = genuine[1]
        assert fields[F_SIG] == sign(bus.stream_key, TRADING_RESULTS, fields[b"i"],
                                     fields[b"t"], fields[b"d"])  # fmt: skip
        client.xadd(key, dict(fields))  # a copy: new id, same signature
        client.xadd(key, {b"d": forged, b"i": b"mallory", b"t": b"1"})  # unsigned
        other_key = b"k" * 64
        client.xadd(key, {b"d": forged, b"i": b"mallory", b"t": b"1",
                          F_SIG: sign(other_key, TRADING_RESULTS, b"mallory", b"1", forged)})
        client.xadd(key, {**fields, b"d": forged})  # the genuine signature, other data
        stats = consume_once(pool)
        assert (stats.applied, stats.duplicates, stats.dead_lettered) == (1, 1, 3), stats
        reasons = sorted(d["reason"] for d in bus.dead_letters(10))
        assert reasons == ["capital_pool: bad signature"] * 2 + [
            "capital_pool: unsigned entry on a signed stream"], reasons
        alerts = [a["payload"] for a in bus.tail(ALERTS, 20)
                  if a["payload"].get("source") == "stream.signature"]  # fmt: skip
        assert len(alerts) == 1 and alerts[0]["level"] == "error", alerts
    client.close()
    assert pool.status()["equity"] == "1050.00"  # the genuine +50, once
    assert pool.verify()["ok"]


def test_status_cache_is_invalidated_by_every_change(pool: CapitalPool) -> None:
    pool.contribute("alice", "1000", "a1", principal=OP)
    assert pool.status()["cached"] is False
    assert pool.status()["cached"] is True
    assert pool.redis.ttl(pool.k_status) > 1700
    pool.contribute("alice", "1000", "a2", principal=OP)
    fresh = pool.status()
    assert fresh["cached"] is False and fresh["equity"] == "2000.00"


def test_a_stale_status_computed_before_a_change_is_not_cached(pool: CapitalPool) -> None:
    gen_before = pool.redis.get(pool.k_gen) or ""
    pool.contribute("alice", "1000", "a1", principal=OP)  # bumps the generation after its commit
    stored = pool._cache_set(keys=[pool.k_status, pool.k_gen],
                             args=[gen_before, "{}", 60])  # fmt: skip
    assert stored == 0 and pool.redis.get(pool.k_status) is None


def test_macro_fallback_assumes_high_vix_when_stale(pool: CapitalPool) -> None:
    pool.contribute("alice", "5000", "a1", principal=OP)
    assert pool.vix()[0] is None and pool.status()["risk_per_trade"] == "0.0100"
    pool.record_macro(D("15"), D("4500"), time.time())
    assert pool.vix()[0] == D("15")
    assert pool.status(use_cache=False)["risk_per_trade"] == "0.0200"
    pool.record_macro(D("15"), D("4500"), time.time() - 10_000)  # older: ignored
    assert pool.vix()[0] == D("15")
    stale = {"vix": "15", "at": repr(time.time() - 10_000), "sp500": ""}
    pool.redis.set(pool.k_macro, pool.seals.seal_json(pool.k_macro, stale))
    vix, why = pool.vix()
    assert vix is None and "assuming a high VIX" in why


def test_the_ledger_is_append_only(pool: CapitalPool) -> None:
    pool.contribute("alice", "1000", "a1", principal=OP)
    with psycopg.connect(libpq_url(pool.settings.database_url)) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE capital_ledger SET cash_delta = 0")
        conn.rollback()
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM capital_ledger")


def test_verify_catches_a_tampered_pool_state(pool: CapitalPool) -> None:
    pool.contribute("alice", "1000", "a1", principal=OP)
    with psycopg.connect(libpq_url(pool.settings.database_url)) as conn:
        conn.execute("UPDATE pool_state SET equity = equity + 1, cash = cash + 1")
    result = pool.verify()
    assert result["ok"] is False and any("ledger sums" in p for p in result["problems"])


def test_database_down_gives_a_retryable_error(pool: CapitalPool) -> None:
    pool.ledger.url = "postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=1"
    pool.ledger.close()
    try:
        result = pool.contribute("alice", "1000", "a1", principal=OP)
        assert result["ok"] is False and result["retry"] is True
        assert "retry" in result["error"]
    finally:
        pool.db.close()  # reset this process's breaker for the other tests


def test_a_batch_applies_in_order_with_the_same_rules_and_keys(pool: CapitalPool) -> None:
    ledger = pool.ledger
    ledger.contribute("alice", "1000", "before", principal=OP)
    results = ledger.apply_batch([
        ("contribute", "bob", "500", "b1"),
        ("withdraw", "alice", "100", "a-w1"),
        ("contribute", "bob", "500", "b1"),        # repeated in the batch: replayed
        ("contribute", "alice", "1000", "before"),  # applied before the batch: replayed
        ("contribute", "carol", "50", "c1"),        # refused by a rule (minimum)
        ("contribute", "carol", "abc", "c2"),       # bad input: refused, not recorded
        ("withdraw", "bob", "600", "b2"),           # above bob's value
        ("transfer", "bob", "1", "t1"),             # unknown action
        ("withdraw", "bob", "200", "b3"),
    ], principal=OP)  # fmt: skip
    oks = [r["ok"] for r in results]
    assert oks == [True, True, True, True, False, False, False, False, True]
    assert results[2].get("replayed") and results[3].get("replayed")
    assert "minimum contribution" in results[4]["error"]
    assert "not a number" in results[5]["error"] and "unknown action" in results[7]["error"]
    assert "more than this member's value" in results[6]["error"]
    # The same keys afterwards, one at a time, replay the batch's answers.
    single = pool.contribute("carol", "50", "c1", principal=OP)
    assert single.pop("replayed") and single == results[4]
    status = pool.status(use_cache=False)
    assert status["equity"] == "1200.00" and status["members"]["bob"]["value"] == "300.00"
    assert pool.verify() == {"ok": True, "problems": []}
    # One audit row per action, in the batch's transaction: principal, key and outcome.
    with psycopg.connect(libpq_url(pool.settings.database_url)) as conn:
        rows = conn.execute("SELECT action, details FROM audit_log ORDER BY id").fetchall()
    got = sorted((a, json.loads(d)["idempotency_key"], json.loads(d)["result"])
                 for a, d in rows)  # fmt: skip
    assert got == sorted([
        ("capital.contribute", "before", "ok"), ("capital.contribute", "b1", "ok"),
        ("capital.withdraw", "a-w1", "ok"), ("capital.contribute", "b1", "replayed"),
        ("capital.contribute", "before", "replayed"), ("capital.contribute", "c1", "refused"),
        ("capital.contribute", "c2", "refused"), ("capital.withdraw", "b2", "refused"),
        ("capital.invalid", "t1", "refused"), ("capital.withdraw", "b3", "ok"),
        ("capital.contribute", "c1", "replayed"),
    ])  # fmt: skip
    assert {json.loads(d)["principal"] for _, d in rows} == {OP}


def test_migration_0002_creates_the_ledger_as_the_models_say(capital_settings: object) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from corec_tasks.db import make_engine
    from plugins.capital_pool.models import CapitalBase

    settings: Any = capital_settings
    eng = make_engine(settings.database_url)
    tables = CapitalBase.metadata.tables
    try:
        with eng.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={
                "compare_type": True,
                "include_name": lambda name, kind, _p: kind != "table" or name in tables,
            })  # fmt: skip
            assert compare_metadata(ctx, CapitalBase.metadata) == []
    finally:
        eng.dispose()


def test_the_manifest_declares_the_capital_consumers_and_beat_drives_them(
    pool: CapitalPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """capital_pool's two consumers are manifest entries (``"loop": true``): beat's
    schedule has one ``corec.plugins.consume`` per stream and no ``capital_pool.consume``
    (``capital_data`` is block ``capital_intake``'s, not a consumer's);
    a round of the trading_results one applies a signed result and dead-letters an
    unsigned one, on the worker process's own pool (``runtime.pool``)."""
    from pathlib import Path

    from beat_schedule import build_beat_schedule
    from corec_tasks.discovery import enabled
    from corec_tasks.plugin_consumers import consume_round
    from corec_tasks.runtime import get_settings
    from corec_tasks.runtime import reset as reset_runtime
    from corec_tasks.settings import load_settings
    from plugins.capital_pool import runtime

    monkeypatch.setenv("COREC_CONFIG", str(Path(__file__).parent.parent / "data"
                                           / "capital_config.json"))  # fmt: skip
    settings = load_settings()
    schedule = build_beat_schedule(settings, enabled(settings))
    names = {f"consume-capital_pool-{s}-capital_pool" for s in (TRADING_RESULTS, MACRO_DATA)}
    assert names <= schedule.keys()
    assert f"consume-capital_pool-{CAPITAL_DATA}-capital_pool" not in schedule
    assert not any(e["task"] == "capital_pool.consume" for e in schedule.values())
    entry = schedule[f"consume-capital_pool-{TRADING_RESULTS}-capital_pool"]
    # The message names the declared consumer, never its code (handler, loop).
    assert entry["kwargs"] == {"plugin": "capital_pool", "stream": TRADING_RESULTS,
                               "group": "capital_pool"}
    assert entry["schedule"] == settings.env.persist_every_s
    pool.contribute("alice", "1000", "a1", principal=OP)
    a0 = pool.allocate("r1")["allocations"][0]["allocation_id"]
    with StreamBus(pool.settings) as bus:
        bus.publish(TRADING_RESULTS, {"data": _packed({"profit": 50.0, "quantity": 0.001,
                                                       "price": 35000.0,
                                                       "allocation_id": a0})})  # fmt: skip
        bus.client.xadd(pool.settings.key(TRADING_RESULTS), {
            b"d": json.dumps({"trade_id": "f", "profit": "9", "quantity": "1",
                              "price": "1"}).encode(), b"i": b"mallory", b"t": b"1"})  # fmt: skip
    # What the beat entry's task runs, in this process (no Celery app: see runtime.py).
    reset_runtime()
    try:
        result = consume_round(get_settings(), **entry["kwargs"])
    finally:
        runtime.pool().close()
        reset_runtime()
    assert result == {"handled": 1, "failed": 0, "dead_lettered": 1}
    assert pool.status(use_cache=False)["equity"] == "1050.00"
