"""The feeds on real Redis (and PostgreSQL for the dead-letter acceptance test).

Ticks publish entries that validate, once per tick key; their state (last closes,
CSV cursors) lives in Redis, so a restarted or second worker continues where the
first stopped; a malformed ``market_data`` entry among the feed's goes to the dead
letter with its reason while the valid ones land in ``eventos``, and the cycle goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import redis

from corec_tasks.db import libpq_url
from corec_tasks.runtime import reset as reset_runtime
from corec_tasks.settings import Settings
from corec_tasks.storage.migrate import upgrade
from corec_tasks.streams.persister import persist_once
from corec_tasks.streams.schemas import check_payload
from plugins.feeds import sim
from plugins.feeds.config import load_config
from plugins.feeds.predictor import parse_prediction
from plugins.feeds.tasks import Feeds
from plugins.trading.channels import MACRO_DATA, MARKET_DATA, PREDICTIONS

pytestmark = [pytest.mark.integration, pytest.mark.config("channels_config.json")]

DATA = Path(__file__).resolve().parents[1] / "data" / "feeds"
SYMBOLS = [f"SYM{i:02d}" for i in range(50)]


@pytest.fixture()
def make(settings: Settings, redis_client: redis.Redis) -> Iterator[Any]:
    """Build Feeds from a config dict (each call is one more 'worker'); closed at the end."""
    made: list[Feeds] = []

    def build(config: dict[str, Any] | None = None) -> Feeds:
        f = Feeds(settings, load_config(config or {}))
        made.append(f)
        return f

    yield build
    for f in made:
        f.close()


def payloads(client: redis.Redis, settings: Settings, stream: str) -> list[dict[str, Any]]:
    rows: Any = client.xrange(settings.key(stream))
    return [json.loads(fields[b"d"]) for _, fields in rows]


def test_market_tick_publishes_every_symbol_once_per_key(
    make: Any, redis_client: redis.Redis, settings: Settings
) -> None:
    f = make({"market": {"symbols": SYMBOLS, "seed": 9}})
    first = f.market.tick("k1")
    assert (first.published, first.skipped) == (50, False)
    again = f.market.tick("k1")  # a redelivery, or a second beat in the same interval
    assert (again.published, again.skipped) == (0, True)
    f.market.tick("k2")

    got = payloads(redis_client, settings, MARKET_DATA)
    assert len(got) == 100
    assert [p["symbol"] for p in got[:50]] == SYMBOLS
    for p in got:
        check_payload(MARKET_DATA, json.dumps(p).encode())
    assert {p["tick"] for p in got} == {"k1", "k2"}
    assert all(p["ohlc"]["open"] == 100.0 for p in got[:50])  # default_price
    # The second tick opens at the first's close.
    assert [p["ohlc"]["open"] for p in got[50:]] == [p["price"] for p in got[:50]]


def test_gbm_state_survives_a_restart_and_follows_the_seeded_path(
    make: Any, redis_client: redis.Redis, settings: Settings
) -> None:
    cfg = {"market": {"symbols": ["A", "B"], "initial_prices": {"A": 10.0, "B": 20.0}}}
    make(cfg).market.tick("1")
    make(cfg).market.tick("2")  # another process: continues from the stored closes
    make(cfg).market.tick("3")
    closes = [p["price"] for p in payloads(redis_client, settings, MARKET_DATA)]

    m = load_config(cfg).market
    p, expected = np.array([10.0, 20.0]), []
    for k in range(3):
        p = sim.market_tick(p, m.seed, k, m.mu, m.sigma, m.dt, m.substeps, m.volume).close
        expected.extend(p.tolist())
    assert closes == pytest.approx(expected, rel=1e-12)
    history = make(cfg).market.history.read(["A"], 10)["A"]  # sealed, newest first
    assert [float(c.price) for c in history] == pytest.approx(expected[::2][::-1], rel=1e-12)


def test_csv_replay_cursor_is_shared_and_survives_restarts(
    make: Any, redis_client: redis.Redis, settings: Settings
) -> None:
    csv = str(DATA / "sample_ohlc.csv")
    cfg = {"market": {"source": "csv", "symbols": ["X"], "csv_files": {"X": csv},
                      "loop": False}}  # fmt: skip
    w1, w2 = make(cfg), make(cfg)
    for i in range(6):
        (w1 if i % 2 else w2).market.tick(str(i))  # two workers take turns
    w1.market.tick("5")  # a repeated key advances nothing
    make(cfg).market.tick("6")  # a restarted worker
    got = payloads(redis_client, settings, MARKET_DATA)
    assert [p["date"] for p in got] == [f"2024-01-{d:02d}" for d in range(1, 8)]
    assert [p["line"] for p in got] == list(range(2, 9))
    for k in range(7, 12):
        w1.market.tick(str(k))
    got = payloads(redis_client, settings, MARKET_DATA)
    assert len(got) == 10  # the file has 10 rows and does not loop
    for p in got:
        check_payload(MARKET_DATA, json.dumps(p).encode())


def test_csv_with_a_bad_row_fails_when_the_feed_is_built(make: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("date,open,high,low,close,volume\n2024-01-01,10,9,11,10,5\n")
    with pytest.raises(Exception, match=r"bad.csv:2: high \(9\) is below low \(11\)"):
        make({"market": {"source": "csv", "symbols": ["X"], "csv_files": {"X": str(bad)}}})


def test_macro_tick_gbm_and_csv(make: Any, redis_client: redis.Redis, settings: Settings) -> None:
    f = make()
    for k in range(20):
        f.macro.tick(str(k))
    f.macro.tick("0")
    got = payloads(redis_client, settings, MACRO_DATA)
    assert len(got) == 20
    for p in got:
        check_payload(MACRO_DATA, json.dumps(p).encode())
        assert p["vix_price"] >= 9.0
    redis_client.delete(settings.key(MACRO_DATA), settings.key("feeds:macro:state"))

    csv = str(DATA / "sample_ohlc.csv")
    c = make({"macro": {"source": "csv", "vix_csv": csv, "sp500_csv": csv}})
    c.macro.tick("csv-1")
    c.macro.tick("csv-2")
    got = payloads(redis_client, settings, MACRO_DATA)
    assert [p["date"] for p in got] == ["2024-01-01", "2024-01-02"]
    assert got[1]["vix_price"] == 99.4866


@pytest.mark.parametrize("source", ["history", "stream"])
def test_predictor_on_a_trending_market_predicts_up_and_down(
    make: Any, redis_client: redis.Redis, settings: Settings, source: str
) -> None:
    up = make({"market": {"symbols": ["UP"], "mu": 400.0, "sigma": 2.0, "seed": 1},
               "predictor": {"window": 40, "source": source}})  # fmt: skip
    down = make({"market": {"symbols": ["DOWN"], "mu": -400.0, "sigma": 2.0, "seed": 2}})
    early = up.predictor.tick("p0")
    assert early["published"] == 0 and early["skipped_symbols"] == ["UP"]  # no history yet
    for k in range(60):
        up.market.tick(f"u{k}")
        down.market.tick(f"d{k}")

    both = make({"market": {"symbols": ["UP", "DOWN"]},
                 "predictor": {"window": 40, "horizon": 3, "source": source}})  # fmt: skip
    result = both.predictor.tick("p1")
    assert (result["published"], result["skipped"]) == (2, False)
    assert both.predictor.tick("p1")["skipped"] is True
    rows: Any = redis_client.xrange(settings.key(PREDICTIONS))
    preds = {p["symbol"]: p for p in (parse_prediction(f[b"d"]) for _, f in rows)}
    assert preds["UP"]["predicted_return"] > 0 > preds["DOWN"]["predicted_return"]
    assert preds["UP"]["horizon"] == 3 and preds["UP"]["model"] == "ridge_ar(2)"
    assert preds["UP"]["observations"] == 37  # 40 closes, 39 returns, 2 lags


# -- the acceptance item: a malformed market_data entry is dead-lettered -------------------


@pytest.fixture()
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    upgrade(database_url)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield conn


def test_malformed_market_data_goes_to_the_dead_letter_and_the_cycle_goes_on(
    make: Any, redis_client: redis.Redis, settings: Settings, db: psycopg.Connection[Any]
) -> None:
    f = make({"market": {"symbols": ["BTCUSDT", "ETHUSDT", "SOLUSDT"]}})
    key = settings.key(MARKET_DATA)
    valid = f.market.tick("t1").ids
    bad = {
        f.ticker.bus.publish(MARKET_DATA, {"symbol": "BTCUSDT", "price": -5}): "price",
        redis_client.xadd(key, {"d": b"{not json", "i": b"x", "t": b"1"}).decode(): "JSON",
        f.ticker.bus.publish(MARKET_DATA, {"price": 1.0}): "symbol: Field required",
        f.ticker.bus.publish(
            MARKET_DATA,
            {"symbol": "ETHUSDT", "price": 2.0,
             "ohlc": {"open": 2, "high": 1, "low": 3, "close": 2}},
        ): "is below low",
    }  # fmt: skip
    valid += f.market.tick("t2").ids

    stats = persist_once(settings, streams=[MARKET_DATA], consumer="feeds-test")
    assert (stats.inserted, stats.dead_lettered) == (6, 4)
    landed = db.execute(
        "SELECT count(*) FROM eventos WHERE entry_key = ANY(%s)",
        ([f"{MARKET_DATA}:{i}" for i in valid],),
    ).fetchone()
    assert landed == (6,)
    dead = {d["id"]: d for d in f.ticker.bus.dead_letters(20) if d["stream"] == MARKET_DATA}
    assert set(dead) == set(bad)
    for entry_id, why in bad.items():
        assert why in dead[entry_id]["reason"]
    assert dead[next(iter(bad))]["payload"] == '{"symbol":"BTCUSDT","price":-5}'

    # The cycle goes on: the next tick lands, nothing is pending or dead-lettered again.
    more = f.market.tick("t3").ids
    again = persist_once(settings, streams=[MARKET_DATA], consumer="feeds-test")
    assert (again.inserted, again.dead_lettered) == (3, 0)
    assert f.ticker.bus.pending(MARKET_DATA, "corec_persister") == 0
    assert len(more) == 3


def test_celery_tasks_run_with_the_settings_and_are_idempotent(
    settings: Settings, redis_client: redis.Redis
) -> None:
    from plugins.feeds import tasks

    reset_runtime()
    try:
        first = tasks.market_tick.apply(kwargs={"tick": "c1"}).get()
        assert first == {"ok": True, "feed": "market", "tick": "c1", "published": 2,
                         "skipped": False}  # fmt: skip
        assert tasks.market_tick.apply(kwargs={"tick": "c1"}).get()["skipped"] is True
        assert tasks.macro_tick.apply().get()["published"] == 1  # default key: the interval
        assert tasks.predict.apply(kwargs={"tick": "c1"}).get()["skipped_symbols"] == [
            "BTCUSDT", "ETHUSDT"]  # fmt: skip
    finally:
        tasks.feeds().close()
        reset_runtime()


# -- the per-symbol signal work as a block of stream-fed entities (signal.py) ---------------


def test_feeds_signal_block_forecasts_each_candle_and_counts_bad_ones_as_errors(
    make: Any, redis_client: redis.Redis, settings: Settings
) -> None:
    """Block ``feeds_signal`` on ``market_data``: entity j gets candle j; its value is the
    predictor's forecast for that candle's symbol (above 0.5 for an up trend, below for a
    down trend, 0.5 with too little history); a malformed candle is one entity's error."""
    from corec_tasks.blocks.builtin import default_registry
    from corec_tasks.blocks.engine import Engine
    from corec_tasks.blocks.model import specs_from_config
    from corec_tasks.blocks.store import BlockStore
    from corec_tasks.config import PluginBlockConfig
    from plugins.feeds.signal import PROCESSOR, MarketSignal, redis_history

    block = PluginBlockConfig(bloque_id="feeds_signal", canal=3, entidades=200,
                              procesador=PROCESSOR, stream=MARKET_DATA)  # fmt: skip
    store = BlockStore(settings, redis_client)
    store.create(specs_from_config([block.as_block()]))
    f = make({"market": {"symbols": ["UP", "DOWN"], "mu": 0.0, "sigma": 0.0},
              "predictor": {"window": 40}})  # fmt: skip
    up = make({"market": {"symbols": ["UP"], "mu": 400.0, "sigma": 2.0, "seed": 1}})
    down = make({"market": {"symbols": ["DOWN"], "mu": -400.0, "sigma": 2.0, "seed": 2}})
    for k in range(60):
        up.market.tick(f"u{k}")
        down.market.tick(f"d{k}")
    redis_client.xadd(settings.key(MARKET_DATA), {b"d": b'{"symbol":"UP","price":-5}',
                                                  b"i": b"x", b"t": b"1"})  # fmt: skip

    def source() -> tuple[Any, Any]:
        cfg = f.config.predictor
        return redis_history(f.market.history), cfg

    registry = default_registry()
    registry.register(PROCESSOR, MarketSignal(source), kind="vector", needs_payload=True)
    (summary,) = Engine(settings, store, registry).run_blocks(["feeds_signal"], 1, 1.0)
    assert (summary["inputs"], summary["errors"]) == (121, 1), summary
    (stored,) = store.load_many(["feeds_signal"])
    values = stored.block.entities.value
    assert values[0] == 0.5  # UP's first candle: no history yet
    assert values[118] > 0.5 > values[119]  # UP's and DOWN's 60th candles
    assert not stored.block.entities.active[120]  # the malformed one
