"""The one consumer loop on real Redis (and PostgreSQL for the capital pool's handler).

A poison entry is isolated and dead-lettered with its reason while the entries behind
it are applied; a dependency that is down claims and counts nothing.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from corec_tasks.settings import Settings, load_settings
from corec_tasks.streams.bus import Entry, StreamBus
from corec_tasks.streams.consumer import (
    Batch,
    ConsumerLoop,
    Done,
    EntryHandler,
    Handler,
    Later,
    Result,
    Unavailable,
    Verdict,
)
from plugins.capital_pool.consumer import GROUP as CAPITAL_GROUP
from plugins.capital_pool.consumer import consume_once
from plugins.capital_pool.service import CapitalPool
from plugins.trading.channels import MACRO_DATA, MARKET_DATA, TRADING_RESULTS

pytestmark = pytest.mark.integration


@pytest.fixture()
def bus(settings: Settings, redis_client: redis.Redis) -> Iterator[StreamBus]:
    with StreamBus(settings) as b:
        yield b


def _seq(entry: Entry) -> int:
    return int(json.loads(entry.payload)["seq"])


def _publish(bus: StreamBus, n: int) -> list[str]:
    return bus.publish_many(MARKET_DATA, [{"symbol": "BTC", "price": 1, "seq": i}
                                          for i in range(n)])  # fmt: skip


class Flaky(EntryHandler):
    """Raises on the entries whose ``seq`` is in ``bad``; records every call."""

    group = "flaky"

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.calls: Counter[int] = Counter()
        self.deliveries: dict[int, list[int]] = {}

    def handle(self, entry: Entry, deliveries: int) -> Verdict:
        seq = _seq(entry)
        self.calls[seq] += 1
        self.deliveries.setdefault(seq, []).append(deliveries)
        if seq in self.bad:
            raise RuntimeError(f"boom {seq}")
        return Done("applied")


def test_handler_exception_is_retried_then_dead_lettered_at_the_default_max_deliveries(
    bus: StreamBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COREC_STREAM_CLAIM_IDLE_MS", "100")  # default max deliveries: 5
    settings = load_settings()
    assert settings.env.stream_max_deliveries == 5
    ids = _publish(bus, 10)
    handler = Flaky({3})
    with StreamBus(settings) as b:
        loop = ConsumerLoop(b, handler, "c1")
        first = loop.run(MARKET_DATA)
        # The entries behind the poison one are applied in the same round.
        assert (first.done, first.failed, first.dead_lettered) == (9, 1, 0)
        assert bus.pending(MARKET_DATA, "flaky") == 1
        rounds = 1
        while bus.pending(MARKET_DATA, "flaky") and rounds < 20:
            time.sleep(0.15)
            loop.run(MARKET_DATA)
            rounds += 1
    assert handler.deliveries[3] == [1, 2, 3, 4, 5]  # tried once per delivery, five times
    assert all(handler.calls[i] == 1 for i in range(10) if i != 3)
    [dead] = bus.dead_letters(10)
    assert dead["id"] == ids[3] and dead["deliveries"] == 5
    assert dead["reason"] == "flaky: RuntimeError: boom 3 (delivery 5 of 5)"
    assert json.loads(dead["payload"])["seq"] == 3


class BatchFlaky(Handler):
    """A batch handler that raises if any entry of the batch is bad."""

    group = "batchy"

    def __init__(self, bad: set[int], poison: bool = False) -> None:
        self.bad = bad
        self.applied: list[int] = []
        self.poisonous = poison

    def apply(self, prepared: Any) -> Result:
        batch: Batch = prepared
        entries = batch.all()
        seqs = [_seq(e) for e in entries]
        if self.bad & set(seqs):
            raise (ArithmeticError if self.poisonous else ValueError)("bad entry in batch")
        self.applied += seqs
        return Result(done=[e.id for e in entries])

    def poison(self, exc: BaseException) -> bool:
        return isinstance(exc, ArithmeticError)


def test_a_batch_that_raises_is_split_until_the_bad_entries_are_alone(
    bus: StreamBus, settings: Settings
) -> None:
    _publish(bus, 100)
    handler = BatchFlaky({17, 60})
    s = ConsumerLoop(bus, handler, "c", batch=100).run(MARKET_DATA)
    assert sorted(handler.applied) == [i for i in range(100) if i not in (17, 60)]
    assert (s.done, s.failed, s.dead_lettered) == (98, 2, 0)
    assert bus.pending(MARKET_DATA, "batchy") == 2

    # A poison exception (bad data) is dead-lettered at once, with its reason.
    _publish(bus, 10)
    poison = BatchFlaky({5}, poison=True)
    poison.group = "batchy2"
    s = ConsumerLoop(bus, poison, "c", batch=100).run(MARKET_DATA)
    assert s.dead_lettered == 2  # seq 5 of each publish: 17 and 60 are fine here
    assert {d["reason"] for d in bus.dead_letters(10)} == {"batchy2: ArithmeticError: bad entry "
                                                           "in batch"}  # fmt: skip
    assert bus.pending(MARKET_DATA, "batchy2") == 0


class Down(EntryHandler):
    """A handler whose dependency is down until ``up`` is set; Later after ``later_at``."""

    group = "down"

    def __init__(self) -> None:
        self.up = False
        self.later_at: int | None = None
        self.deliveries: dict[int, list[int]] = {}

    @contextmanager
    def ready(self) -> Iterator[None]:
        if not self.up:
            raise Unavailable("the database is down")
        yield

    def handle(self, entry: Entry, deliveries: int) -> Verdict:
        seq = _seq(entry)
        self.deliveries.setdefault(seq, []).append(deliveries)
        if self.later_at is not None and seq >= self.later_at:
            return Later("the database went away")
        return Done()


def test_a_dependency_down_claims_nothing_and_counts_no_delivery(
    bus: StreamBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COREC_STREAM_CLAIM_IDLE_MS", "100")
    monkeypatch.setenv("COREC_STREAM_MAX_DELIVERIES", "2")
    settings = load_settings()
    _publish(bus, 10)
    handler = Down()
    with StreamBus(settings) as b:
        loop = ConsumerLoop(b, handler, "c")
        for _ in range(5):  # down before the round: nothing read, nothing claimed
            s = loop.run(MARKET_DATA)
            assert s.read == 0 and s.unavailable == "the database is down"
        assert bus.pending(MARKET_DATA, "down") == 0
        # Up, but it goes away at entry 4: 4 applied, 6 left uncounted, round stopped.
        handler.up, handler.later_at = True, 4
        for _ in range(6):  # far more rounds than max deliveries
            s = loop.run(MARKET_DATA)
            assert s.dead_lettered == 0 and s.deferred == 6
            assert s.unavailable == "the database went away"
            time.sleep(0.02)
        pending: Any = b.client.xpending_range(b.key(MARKET_DATA), "down", "-", "+", 100)
        assert [int(p["times_delivered"]) for p in pending] == [0] * 6
        handler.later_at = None
        s = loop.run(MARKET_DATA)  # back: reclaimed at once (idle), applied once each
    assert (s.done, s.reclaimed, s.dead_lettered) == (6, 6, 0)
    assert bus.pending(MARKET_DATA, "down") == 0
    assert bus.dead_letters(10) == []
    assert all(d[-1] == 1 for d in handler.deliveries.values())  # every try was delivery 1
    assert [len(handler.deliveries[i]) for i in range(4)] == [1] * 4


class Writers(Handler):
    """A batch handler on two writer threads whose dependency goes away at ``down_at``."""

    group = "writers"
    concurrency = 2

    def __init__(self, down_at: int) -> None:
        self.down_at = down_at
        self.applied: list[int] = []

    def apply(self, prepared: Any) -> Result:
        batch: Batch = prepared
        entries = batch.all()
        if any(_seq(e) >= self.down_at for e in entries):
            return Result(later=entries, later_reason="the database went away")
        self.applied += [_seq(e) for e in entries]
        return Result(done=[e.id for e in entries])


def test_batches_read_ahead_are_given_back_when_a_dependency_goes_away(
    bus: StreamBus, settings: Settings
) -> None:
    _publish(bus, 200)
    handler = Writers(down_at=50)
    loop = ConsumerLoop(bus, handler, "c", batch=10, claim_idle_ms=100)
    s = loop.run(MARKET_DATA, max_batches=100)
    assert s.unavailable == "the database went away" and s.dead_lettered == 0
    assert sorted(handler.applied) == list(range(50))
    # Whatever was read (the failed batch, the one in flight, the one read ahead) waits
    # uncounted; the rest was never read.
    pending: Any = bus.client.xpending_range(bus.key(MARKET_DATA), "writers", "-", "+", 500)
    assert {int(p["times_delivered"]) for p in pending} <= {0}
    assert s.read == 50 + len(pending) and s.deferred == len(pending)
    handler.down_at = 10**9
    s = loop.run(MARKET_DATA, max_batches=100)
    assert sorted(handler.applied) == list(range(200))
    assert bus.pending(MARKET_DATA, "writers") == 0 and bus.dead_letters(10) == []


def test_capital_consumer_dead_letters_poison_results_and_applies_the_rest(
    pool: CapitalPool,
) -> None:
    pool.contribute("alice", "1000", "a1", principal="operator:test")
    a0, a1, a2, a3 = (a["allocation_id"] for a in pool.allocate("r1")["allocations"][:4])
    long_id = "t-" + "x" * 300  # capital_trade_results.trade_id is varchar(200)
    with StreamBus(pool.settings) as bus:
        ids = [
            bus.publish(TRADING_RESULTS, {"trade_id": "t-1", "profit": "5", "quantity": "1",
                                          "price": "10", "allocation_id": a0}),
            bus.publish(TRADING_RESULTS, {"trade_id": "t-huge", "profit": "1e308",
                                          "quantity": "1", "price": "10", "allocation_id": a1}),
            bus.publish(TRADING_RESULTS, {"trade_id": long_id, "profit": "1", "quantity": "1",
                                          "price": "10", "allocation_id": a2}),
            bus.publish(TRADING_RESULTS, {"trade_id": "t-2", "profit": "7", "quantity": "1",
                                          "price": "10", "allocation_id": a3}),
        ]  # fmt: skip
        bus.publish(MACRO_DATA, {"vix_price": True, "sp500_price": 4500.0})
        bus.publish(MACRO_DATA, {"vix_price": 18.5, "sp500_price": 4500.0})
        stats = consume_once(pool)
        # Two poison trades; the boolean VIX is dead-lettered here (or skipped, if the
        # schema already refuses it: the persister's group dead-letters it then).
        assert (stats.applied, stats.failed, stats.macro) == (2, 0, 1)
        assert stats.dead_lettered in (2, 3)
        dead = {d["id"]: d["reason"] for d in bus.dead_letters(10)
                if d["stream"] == TRADING_RESULTS}  # fmt: skip
        assert ids[1] in dead and ids[2] in dead and ids[0] not in dead and ids[3] not in dead
        # Rejected at once, with what went wrong (or by the schema, if it is stricter).
        assert "InvalidOperation" in dead[ids[1]] or "profit" in dead[ids[1]]
        assert "StringDataRightTruncation" in dead[ids[2]] or "trade_id" in dead[ids[2]]
        assert bus.pending(TRADING_RESULTS, CAPITAL_GROUP) == 0
        assert bus.pending(MACRO_DATA, CAPITAL_GROUP) == 0  # no Decimal("True") every round
        assert consume_once(pool).applied == 0
    status = pool.status()
    assert status["equity"] == "1012.00" and status["vix"] == "18.5"
    assert pool.verify()["ok"]
