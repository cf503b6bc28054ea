"""``statistics`` rows on real PostgreSQL: after block cycles run by real Celery workers
(the ``trading.block_stats`` beat task) and after trading cycles (``trading.finish_cycle``),
once per cycle however often they run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from corec_tasks.runtime import reset as reset_runtime
from corec_tasks.settings import Settings
from corec_tasks.storage.migrate import upgrade
from plugins.capital_pool.service import CapitalPool
from plugins.pipeline import block_stats, tasks
from plugins.pipeline.config import TradingConfig
from plugins.pipeline.cycle import Trading
from plugins.trading import statistics
from plugins.trading.db import make_trading_engine, session_factory
from plugins.trading.models import Statistics
from tests.integration.workers import running_workers

pytestmark = pytest.mark.integration

EAGER = TradingConfig(strategy={"prediction_threshold": "0.00001", "exit_band": "0.000001"})


def _rows(sessions: sessionmaker[Session], prefix: str, at: object) -> dict[str, float]:
    with sessions() as s:
        found = s.execute(select(Statistics.key, Statistics.value).where(
            Statistics.key.startswith(prefix), Statistics.timestamp == at)).all()  # fmt: skip
    return {k: v for k, v in found}


@pytest.fixture()
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    upgrade(settings.database_url)
    engine = make_trading_engine(settings.database_url)
    yield session_factory(engine)
    engine.dispose()


def test_block_cycles_write_their_statistics_once(
    settings: Settings, sessions: sessionmaker[Session], redis_client: redis.Redis,
    tmp_path: Path,
) -> None:  # fmt: skip
    with running_workers(["s1"], tmp_path):
        res = subprocess.run([sys.executable, "-m", "corec_tasks.cli", "blocks", "run",
                              "--cycles", "2", "--json"], capture_output=True, text=True,
                             timeout=300, env=dict(os.environ))  # fmt: skip
    assert res.returncode == 0, res.stderr
    records = json.loads(res.stdout)
    first = block_stats.write_block_stats(settings, redis_client, sessions)
    assert first == {"cycles": 2, "rows": 16}
    again = block_stats.write_block_stats(settings, redis_client, sessions)
    assert again == {"cycles": 0, "rows": 0}
    for record in records:
        ts = redis_client.get(settings.key(f"corec:cycle:ts:{record['cycle']}"))
        assert ts is not None
        got = _rows(sessions, "block.", statistics.stamp(float(ts)))
        assert set(got) == {
            "block.blocks",
            "block.ran",
            "block.persisted",
            "block.fitness",
            "block.load",
            "block.errors",
            "block.redirected",
            "block.wall_s",
        }
        assert got["block.blocks"] == got["block.ran"] == got["block.persisted"] == 3
        assert 0 <= got["block.fitness"] <= 1 and 0 < got["block.load"] <= 1
        assert got["block.wall_s"] == pytest.approx(record["wall_s"])
        assert got["block.redirected"] == 0
        assert record["redirections"] == 0  # sync's running total, in every cycle record


def test_redirected_counts_the_redirections_since_the_cycle_before() -> None:
    """Each cycle's record keeps sync's running total; cycles of different intervals
    interleave, so entity counts of the previous cycle's blocks say nothing."""
    rows = [("a", 900, 0.5, 0.4, 0), ("b", 1100, 0.9, 0.6, 2), ("c", 10, None, None, 0)]
    record = {"blocks": "3", "ran": "3", "wall_s": "0.5", "redirections": "7"}
    got = block_stats.cycle_values(record, rows, {"redirections": "5"})
    assert got["block.redirected"] == 2 and got["block.errors"] == 2
    assert block_stats.cycle_values(record, rows, None)["block.redirected"] == 0
    assert block_stats.cycle_values(record, rows, {"cycle": "1"})["block.redirected"] == 0
    assert got["block.fitness"] == pytest.approx(0.7) and got["block.load"] == pytest.approx(0.5)


def test_trading_cycles_write_orders_fills_and_profit_once(
    capital_settings: Settings, pool: CapitalPool
) -> None:
    pool.contribute("alice", "10000", "a-1", principal="operator:test")
    t = Trading(capital_settings, EAGER)
    reset_runtime()
    try:
        summaries, stamps = [], []
        for i in range(12):
            prepared = t.prepare(f"c{i}")
            started = time.time()
            for job in prepared.jobs:
                t.process_asset(job)
            # What the cycle's last wave sends: the real task body, in this process.
            summaries.append(tasks.finish_cycle.run(f"c{i}", prepared.jobs, started))
            tasks.finish_cycle.run(f"c{i}", prepared.jobs, started)  # a redelivery
            stamps.append(statistics.stamp(started))
        sessions = tasks.trading().sessions
        orders = fills = 0
        profit = Decimal(0)
        for summary, at in zip(summaries, stamps, strict=True):
            got = _rows(sessions, "trading.", at)
            assert set(got) == {
                "trading.assets",
                "trading.orders",
                "trading.fills",
                "trading.errors",
                "trading.profit",
                "trading.wall_s",
            }
            assert got["trading.assets"] == 2 and got["trading.errors"] == 0
            assert got["trading.orders"] == sum(n for a, n in summary["actions"].items()
                                                if a in ("open", "close"))  # fmt: skip
            assert got["trading.profit"] == float(summary["profit"])
            orders += int(got["trading.orders"])
            fills += int(got["trading.fills"])
            profit += Decimal(summary["profit"])
        assert orders > 0 and 0 < fills <= orders and profit != 0
        with sessions() as s:
            rows = s.execute(select(Statistics.key).where(Statistics.key.startswith(
                "trading."))).all()  # fmt: skip
        assert len(rows) == 12 * 6  # the redelivered callbacks wrote nothing
    finally:
        t.close()
        tasks.trading().close()
        reset_runtime()
