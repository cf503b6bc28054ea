"""Seed 000's channel intake as a block of stream-fed entities (plugins/capital_pool/intake.py),
run by the engine on real Redis and PostgreSQL: each signed action applied once and
audited, answered on corec_responses once, refusals and bad entries counted as the
block's errors, unsigned entries dead-lettered, nothing acked while the ledger is down."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from corec_tasks.blocks.builtin import default_registry
from corec_tasks.blocks.engine import Engine
from corec_tasks.blocks.model import specs_from_config
from corec_tasks.blocks.processors import ProcessorUnavailable
from corec_tasks.blocks.store import BlockStore, feed_group
from corec_tasks.config import PluginBlockConfig
from corec_tasks.db import libpq_url
from corec_tasks.nucleus import Nucleus
from corec_tasks.settings import Settings, load_settings
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import ALERTS, RESPONSES
from plugins.capital_pool.config import load_config
from plugins.capital_pool.intake import PROCESSOR, CapitalIntake
from plugins.capital_pool.service import CapitalPool
from plugins.trading.channels import CAPITAL_DATA
from tests.conftest import DATA
from tests.integration.workers import worker_and_beat

pytestmark = pytest.mark.integration

#: The block as shipped in corec_config.json, smaller.
BLOCK = PluginBlockConfig(bloque_id="capital_intake", canal=1, entidades=10,
                          procesador=PROCESSOR, intervalo_s=5, stream=CAPITAL_DATA,
                          max_errores=0.2)  # fmt: skip


def _engine(pool: CapitalPool) -> Engine:
    store = BlockStore(pool.settings)
    store.create(specs_from_config([BLOCK.as_block()]))  # its group starts at the stream's end
    registry = default_registry()
    registry.register(PROCESSOR, CapitalIntake(lambda: pool), kind="vector", needs_payload=True)
    return Engine(pool.settings, store, registry)


def _responses(bus: StreamBus) -> list[dict[str, Any]]:
    return [e["payload"] for e in bus.tail(RESPONSES, 50)]


def test_signed_actions_applied_once_answered_once_and_bad_ones_are_block_errors(
    pool: CapitalPool,
) -> None:
    engine = _engine(pool)
    client: Any = redis.Redis.from_url(pool.settings.redis_url)
    key = pool.settings.key(CAPITAL_DATA)
    with StreamBus(pool.settings) as bus:
        first = bus.publish(CAPITAL_DATA, {"user_id": "user1", "action": "contribute",
                                           "amount": "500.00"})  # fmt: skip
        (entry,) = client.xrange(key, first, first)
        client.xadd(key, dict(entry[1]))  # a copy: new id, same signature
        bus.publish(CAPITAL_DATA, {"user_id": "user1", "action": "withdraw", "amount": "100",
                                   "idempotency_key": "w-1"})  # fmt: skip
        bus.publish(CAPITAL_DATA, {"user_id": "user1", "action": "withdraw",
                                   "amount": "9999.00", "idempotency_key": "w-2"})  # fmt: skip
        bus.publish(CAPITAL_DATA, {"user_id": "user1", "action": "contribute",
                                   "amount": 500.0})  # the seed's float: the schema refuses
        client.xadd(key, {b"d": b'{"user_id":"mallory","action":"contribute",'
                                b'"amount":"1000000.00"}', b"i": b"x", b"t": b"1"})  # fmt: skip

        (summary,) = engine.run_blocks(["capital_intake"], cycle=1, ts=1.0)
        # Five signed entries ran (one entity each); the refusal and the float are errors.
        assert (summary["inputs"], summary["errors"]) == (5, 2), summary
        again = engine.run_blocks(["capital_intake"], cycle=1, ts=1.0)  # a redelivery
        assert again == [summary]
        assert client.xpending(key, feed_group("capital_intake"))["pending"] == 0

        dead = bus.dead_letters(10)
        assert [d["reason"] for d in dead] == [
            "corec_block:capital_intake: unsigned entry on a signed stream"]
        alerts = [a["payload"] for a in bus.tail(ALERTS, 20)
                  if a["payload"].get("source") == "stream.signature"]  # fmt: skip
        assert len(alerts) == 1 and alerts[0]["level"] == "error", alerts

        answers = {a["id"]: a for a in _responses(bus)}
        sig = entry[1][b"s"].decode()
        assert sorted(answers) == sorted([f"capital:user1:stream:{sig}", "capital:user1:w-1",
                                          "capital:user1:w-2"])  # fmt: skip
        assert len(_responses(bus)) == 3  # the copy replayed, not answered twice
        assert answers[f"capital:user1:stream:{sig}"]["response"]["ok"] is True
        assert answers["capital:user1:w-1"]["response"]["units"] == "100.00000000"
        assert "error" in answers["capital:user1:w-2"]

        pool.allocate("r1")  # the pool's own allocations on the same stream: passed over
        (later,) = engine.run_blocks(["capital_intake"], cycle=2, ts=2.0)
        assert later["inputs"] >= 1 and later["errors"] == 0, later
    client.close()
    status = pool.status(use_cache=False)
    assert status["members"]["user1"]["value"] == "400.00" and "mallory" not in status["members"]
    with psycopg.connect(libpq_url(pool.settings.database_url)) as conn:
        rows = conn.execute("SELECT details FROM audit_log ORDER BY id").fetchall()
    audited = [(json.loads(d)["principal"], json.loads(d)["result"]) for (d,) in rows]
    producer = f"stream:{pool.settings.instance_id}"
    # One row per action (one batch: the ledger writes the replay's row last).
    assert sorted(audited) == sorted([(producer, "ok"), (producer, "replayed"), (producer, "ok"),
                                      (producer, "refused")]), audited  # fmt: skip
    assert pool.verify()["ok"]


def test_nothing_is_acked_while_the_ledger_is_down(
    pool: CapitalPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger unreachable: the run raises ProcessorUnavailable (the task is retried),
    nothing is recorded or acked; back up, the same entry is applied once."""
    engine = _engine(pool)
    with StreamBus(pool.settings) as bus:
        bus.publish(CAPITAL_DATA, {"user_id": "ann", "action": "contribute", "amount": "300",
                                   "idempotency_key": "c-1"})  # fmt: skip
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
    down = CapitalPool(load_settings(), pool.config)
    engine.registry.register(PROCESSOR, CapitalIntake(lambda: down), kind="vector",
                             needs_payload=True, replace=True)  # fmt: skip
    try:
        with pytest.raises(ProcessorUnavailable):
            engine.run_blocks(["capital_intake"], cycle=1, ts=1.0)
    finally:
        down.close()
    key = pool.settings.key(CAPITAL_DATA)
    assert engine.redis.xpending(key, feed_group("capital_intake"))["pending"] == 1
    (stored,) = engine.store.load_many(["capital_intake"])
    assert stored.last_cycle != 1
    engine.registry.register(PROCESSOR, CapitalIntake(lambda: pool), kind="vector",
                             needs_payload=True, replace=True)  # fmt: skip
    (summary,) = engine.run_blocks(["capital_intake"], cycle=1, ts=1.0)
    assert (summary["inputs"], summary["errors"]) == (1, 0)
    assert engine.redis.xpending(key, feed_group("capital_intake"))["pending"] == 0
    assert pool.status(use_cache=False)["members"]["ann"]["value"] == "300.00"


def test_through_a_worker_and_beat_each_action_applied_once_and_the_bad_dead_lettered(
    capital_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped shape: block ``capital_intake`` registered by the nucleus, beat's
    2-second block cycle, a real worker whose nucleus loaded the plugin's processor.
    A signed contribution and its copy: applied once, audited, answered once. The
    seed's float amount: an error of its entity, dead-lettered by the persister.
    An unsigned one: dead-lettered by the block's group."""
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "intake_config.json"))
    settings = load_settings()
    nucleus = Nucleus(settings)
    nucleus.initialize()
    nucleus.modules["registry"].run()  # registers the block: its group starts here
    client: Any = redis.Redis.from_url(settings.redis_url)
    key = settings.key(CAPITAL_DATA)
    with StreamBus(settings) as bus:
        contribution = {"user_id": "user1", "action": "contribute", "amount": "500.00",
                        "idempotency_key": "c-1"}  # fmt: skip
        first = bus.publish(CAPITAL_DATA, contribution)
        (entry,) = client.xrange(key, first, first)
        client.xadd(key, dict(entry[1]))  # a copy
        bus.publish(CAPITAL_DATA, {"user_id": "user1", "action": "contribute", "amount": 5.0})
        client.xadd(key, {b"d": b'{"user_id":"mallory","action":"contribute",'
                                b'"amount":"1000000.00"}', b"i": b"x", b"t": b"1"})  # fmt: skip
        with worker_and_beat(tmp_path):
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                dead = bus.dead_letters(10)
                answered = _responses(bus)
                if len(dead) >= 2 and answered:
                    break
                time.sleep(0.5)
    client.close()
    assert [a["id"] for a in answered] == ["capital:user1:c-1"], answered
    assert answered[0]["response"]["units"] == "500.00000000"
    reasons = sorted(d["reason"] for d in dead)
    assert len(reasons) == 2, reasons
    assert "unsigned entry on a signed stream" in reasons[1] and "amount" in reasons[0], reasons
    pool = CapitalPool(settings, load_config())
    try:
        status = pool.status(use_cache=False)
        assert status["members"]["user1"]["value"] == "500.00"
        assert "mallory" not in status["members"]
        assert pool.verify()["ok"]
    finally:
        pool.close()
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        rows = conn.execute("SELECT details FROM audit_log ORDER BY id").fetchall()
    audited = [(json.loads(d)["principal"], json.loads(d)["result"]) for (d,) in rows]
    assert audited == [("stream:corec_intake", "ok"), ("stream:corec_intake", "replayed")]
