"""Issue 19, part 4: someone with the Redis password but no CoreC key cannot drive the
system through ``corec_commands`` nor hide an answer on ``corec_responses``. Each attack
is made with redis-py alone, against real workers on real Redis and PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from corec_tasks.commands import last_response_id, send, wait_response
from corec_tasks.nucleus import Nucleus
from corec_tasks.settings import Settings, load_settings
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import ALERTS, COMMANDS, RESPONSES
from corec_tasks.streams.signing import check, sign, stream_key
from plugins.capital_pool.config import load_config
from plugins.capital_pool.service import CapitalPool
from plugins.trading.channels import CAPITAL_DATA
from tests.conftest import DATA
from tests.integration.workers import celery, running_workers, worker_and_beat

pytestmark = pytest.mark.integration


def _raw(payload: dict[str, Any], t_ms: int | None = None) -> dict[bytes, bytes]:
    """An entry in CoreC's wire format, as anyone with redis-py writes it (no ``s``)."""
    t = b"%d" % (time.time() * 1000 if t_ms is None else t_ms)
    return {b"d": json.dumps(payload).encode(), b"i": b"corec_cmd", b"t": t}


def _signature_alerts(bus: StreamBus, stream: str) -> list[dict[str, Any]]:
    return [a["payload"] for a in bus.tail(ALERTS, 50)
            if a["payload"].get("source") == "stream.signature"
            and a["payload"].get("subject") == stream]  # fmt: skip


def _sizes(nucleus: Nucleus) -> dict[str, int]:
    return {m["spec"]["id"]: int(m["num_entidades"]) for m in nucleus.store.metas()}


def test_a_raw_command_does_nothing_and_a_forged_copy_hides_no_real_answer(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A raw XADD of ``blocks.redirect`` (unsigned), a captured signed command sent
    again 400 s later, and an unsigned command reusing a real command's id: none moves
    an entity; each gets a signed refusal and an ``error`` alert; the real command runs
    once and its sender is shown its real answer."""
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "commands_config.json"))
    s = load_settings()
    nucleus = Nucleus(s)
    nucleus.initialize()
    nucleus.modules["registry"].run()
    src, dst = nucleus.store.ids()[:2]
    before = _sizes(nucleus)
    client: Any = redis.Redis.from_url(s.redis_url)
    key = s.key(COMMANDS)
    forged_id = uuid.uuid4().hex
    client.xadd(key, _raw({"id": forged_id, "command": "blocks.redirect", "target": "core",
                           "args": {"src": src, "dst": dst, "count": 399}}))  # fmt: skip
    # A command a key holder signed 400 s ago, captured and added now.
    old_t = b"%d" % ((time.time() - 400) * 1000)
    old_d = json.dumps({"id": uuid.uuid4().hex, "command": "blocks.redirect", "target": "core",
                        "args": {"src": src, "dst": dst, "count": 399}}).encode()  # fmt: skip
    client.xadd(key, {b"d": old_d, b"i": b"corec_cmd", b"t": old_t,
                      b"s": sign(stream_key(s), COMMANDS, b"corec_cmd", old_t, old_d)})  # fmt: skip
    since = last_response_id(s, client)
    real = send(s, client, "core", "blocks.redirect", {"src": src, "dst": dst, "count": 5})
    # The same id, unsigned, asking for more: refused, and it cannot pre-empt the real one.
    client.xadd(key, _raw({"id": real.id, "command": "blocks.redirect", "target": "core",
                           "args": {"src": src, "dst": dst, "count": 300}}))  # fmt: skip
    with running_workers(["cmd"], tmp_path):
        assert celery("call", "corec.commands.dispatch").returncode == 0
        answer = wait_response(s, client, real.id, entry=real.entry, since=since, timeout_s=60)
        refusal = wait_response(s, client, forged_id, timeout_s=30)
    after = _sizes(nucleus)
    assert answer is not None and answer["response"] == {"moved": 5, "src": src, "dst": dst}
    assert after[src] == before[src] - 5 and after[dst] == before[dst] + 5  # only the real 5
    assert refusal is not None and "refused" in refusal and "unsigned" in refusal["error"]
    with StreamBus(s, client) as bus:
        answers = client.xrange(s.key(RESPONSES))
        # Every answer is signed: the real one, and the three refusals.
        assert len(answers) == 4
        assert all(check(bus.stream_key, RESPONSES, f) is None for _, f in answers)
        payloads = [json.loads(f[b"d"]) for _, f in answers]
        refused = sorted(p["error"] for p in payloads if "refused" in p)
        assert len(refused) == 3
        assert sum("s apart from when Redis added it" in r for r in refused) == 1, refused
        reasons = sorted(d["reason"] for d in bus.dead_letters(10))
        assert len(reasons) == 3 and sum("unsigned" in r for r in reasons) == 2, reasons
        alerts = _signature_alerts(bus, COMMANDS)
        assert alerts and all(a["level"] == "error" for a in alerts), alerts
    client.close()


def test_a_preset_answered_marker_and_a_forged_answer_do_not_hide_the_pools_refusal(
    capital_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack as measured: ``corec:cmd:answered:capital:bob:K`` set first, then a
    fake ``"ok": true`` for it on ``corec_responses``; bob's signed withdrawal above his
    value, applied by the capital intake block on a real worker, is refused, and the
    reader is shown that refusal, not the fake; the fake is alerted."""
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "intake_config.json"))
    settings = load_settings()
    nucleus = Nucleus(settings)
    nucleus.initialize()
    nucleus.modules["registry"].run()
    pool = CapitalPool(settings, load_config())
    try:
        assert pool.contribute("bob", "500.00", "b-1", principal="op:test")["ok"]
    finally:
        pool.close()
    client: Any = redis.Redis.from_url(settings.redis_url)
    cid = "capital:bob:K"
    client.set(settings.key(f"corec:cmd:answered:{cid}"), b"1", ex=3600)
    fake = {"id": cid, "target": "capital_pool", "command": "withdraw",
            "response": {"ok": True, "amount": "5000.00"}}  # fmt: skip
    client.xadd(settings.key(RESPONSES), _raw(fake))
    with StreamBus(settings) as bus:
        bus.publish(CAPITAL_DATA, {"user_id": "bob", "action": "withdraw", "amount": "5000.00",
                                   "idempotency_key": "K"})  # fmt: skip
        with worker_and_beat(tmp_path):
            got = wait_response(settings, client, cid, timeout_s=90)
        alerts = _signature_alerts(bus, RESPONSES)
    client.close()
    assert got is not None and "response" not in got, got
    assert "error" in got and "5000" not in json.dumps(got.get("response")), got
    assert alerts and alerts[0]["level"] == "error" and cid in alerts[0]["message"], alerts
    pool = CapitalPool(settings, load_config())
    try:
        assert pool.status(use_cache=False)["members"]["bob"]["value"] == "500.00"
    finally:
        pool.close()
