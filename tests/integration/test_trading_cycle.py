"""The full trading cycle on real Redis and PostgreSQL: allocation -> prediction ->
pipeline -> strategy -> broker, results into the capital pool's NAV."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from corec_tasks.db import libpq_url
from corec_tasks.settings import Settings, load_settings
from plugins.capital_pool.consumer import consume_once
from plugins.capital_pool.service import CapitalPool
from plugins.pipeline.config import TradingConfig
from plugins.pipeline.cycle import Trading, summarise
from tests.conftest import DATA, ROOT
from tests.integration.workers import running_workers

pytestmark = pytest.mark.integration
#: The principal audited for the actions of these tests.
OP = "operator:tests"

#: Trade on small signals so a few cycles open and close positions.
EAGER = TradingConfig(strategy={"prediction_threshold": "0.00001", "exit_band": "0.000001"})


def _count(settings: Settings, sql: str) -> int:
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def test_cycles_trade_every_instrument_and_move_the_pools_nav(
    capital_settings: Settings, pool: CapitalPool
) -> None:
    pool.contribute("alice", "10000", "a-1", principal=OP)
    t = Trading(capital_settings, EAGER)
    try:
        summaries = []
        for i in range(12):
            prepared = t.prepare(f"c{i}")
            assert len(prepared.jobs) == 2  # every configured instrument, each cycle
            summaries.append(summarise(f"c{i}", [t.process_asset(j) for j in prepared.jobs], 0))
        actions = [a for s in summaries for a in s["actions"]]
        assert "open" in actions and "close" in actions, summaries
        assert not [e for s in summaries for e in s["errors"]], summaries
        # The same cycle again replays: no new order.
        orders = _count(capital_settings, "SELECT count(*) FROM orders")
        again = [t.process_asset(j) for j in t.prepare("c11").jobs]
        assert all(r.get("replayed") for r in again)
        assert _count(capital_settings, "SELECT count(*) FROM orders") == orders
    finally:
        t.close()
    stats = consume_once(pool)
    closes = sum(s["actions"].get("close", 0) for s in summaries)
    assert stats.applied == closes and stats.dead_lettered == 0
    profit = sum(float(s["profit"]) for s in summaries)
    status = pool.status(use_cache=False)
    assert abs(float(status["equity"]) - (10000 + profit)) < 0.011
    assert pool.verify() == {"ok": True, "problems": []}


def test_a_cycle_fans_out_across_celery_workers(
    capital_settings: Settings, pool: CapitalPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "trading_config.json"))
    pool.contribute("alice", "10000", "a-1", principal=OP)
    with running_workers(["trade1", "trade2"], tmp_path, concurrency=2):
        run = [sys.executable, "-m", "corec_tasks.cli", "trading", "cycle", "--key", "w",
               "--cycles", "3", "--json"]  # fmt: skip
        first = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr[-3000:]
        orders = _count(load_settings(), "SELECT count(*) FROM orders")
        again = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
    summaries = json.loads(first.stdout)
    assert [s["assets"] for s in summaries] == [2, 2, 2]
    assert not [e for s in summaries for e in s["errors"]], summaries
    assert _count(load_settings(), "SELECT count(*) FROM orders") == orders  # replayed


def test_a_forged_allocation_never_reaches_the_book(
    capital_settings: Settings, pool: CapitalPool
) -> None:
    """Allocations send orders to the broker: one appended to capital_data by someone
    without the stream key is dead-lettered by the pipeline's group, while the pool's
    own (signed) allocations fill the book."""
    import redis

    from corec_tasks.streams.bus import StreamBus

    pool.contribute("alice", "10000", "a-1", principal=OP)
    forged = {"kind": "allocation", "allocation_id": "forged-1", "amount": "5000.00",
              "symbol": "BTC/USDT"}  # fmt: skip
    client = redis.Redis.from_url(capital_settings.redis_url)
    client.xadd(capital_settings.key("capital_data"),
                {"d": json.dumps(forged), "i": "mallory", "t": "1"})  # fmt: skip
    client.close()
    published = pool.allocate("r1")["published"]
    t = Trading(capital_settings, EAGER)
    try:
        assert t.sync_allocations() == published > 0
        book = t.book()
        assert "forged-1" not in {a["allocation_id"] for a in book}
    finally:
        t.close()
    with StreamBus(capital_settings) as bus:
        reasons = [d["reason"] for d in bus.dead_letters(10)]
    assert reasons == ["trading: unsigned entry on a signed stream"], reasons
