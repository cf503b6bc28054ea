"""Stream-fed blocks on real workers: a worker process group SIGKILLed mid-cycle, every
entry still processed exactly once (none lost, none twice)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import redis

from corec_tasks.blocks.store import feed_group
from corec_tasks.nucleus import Nucleus
from corec_tasks.procs import managed, start, worker_cmd
from corec_tasks.settings import Settings, load_settings
from corec_tasks.storage.migrate import upgrade
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import BLOCK_RESULTS
from plugins.trading.channels import MARKET_DATA
from tests.integration.workers import celery, wait_for_nodes

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"
ENTRIES = 12000


def _task_ids(log: Path, state: str) -> set[str]:
    pattern = rf"Task corec\.blocks\.run_chunk\[([0-9a-f-]+)\] {state}"
    return set(re.findall(pattern, log.read_text(errors="replace")))


@pytest.mark.parametrize("delivery", ["shortened", "default"])
def test_each_entry_is_processed_once_across_a_worker_kill(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, delivery: str,
) -> None:  # fmt: skip
    for name in ("COREC_VISIBILITY_TIMEOUT", "COREC_UNACKED_HEARTBEAT_S",
                 "COREC_RESTORE_INTERVAL_S", "COREC_TASK_TIME_LIMIT", "COREC_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    if delivery == "shortened":  # fast; "default" proves the shipped settings (~35 s)
        monkeypatch.setenv("COREC_VISIBILITY_TIMEOUT", "6")
        monkeypatch.setenv("COREC_UNACKED_HEARTBEAT_S", "1")
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "stream_kill_config.json"))
    s = load_settings()
    assert s.env.visibility_timeout_s == (6 if delivery == "shortened" else 30)
    upgrade(s.database_url)
    nucleus = Nucleus(s)
    nucleus.initialize()
    nucleus.modules["registry"].run()
    assert nucleus.store.count() == 120
    StreamBus(s, redis_client).publish_many(
        MARKET_DATA, ({"symbol": "ETH", "price": 2000 + i % 13} for i in range(ENTRIES)))
    key = s.key(MARKET_DATA)
    with managed(worker_cmd("rescuer", 2), tmp_path / "rescuer.log"):
        victim = start(worker_cmd("victim", 2), tmp_path / "victim.log")
        try:
            wait_for_nodes(2, tmp_path)
            call = celery("call", "corec.blocks.cycle", "--kwargs", '{"chunk": 1}')
            assert call.returncode == 0, call.stderr
            log = tmp_path / "victim.log"
            deadline = time.monotonic() + 60
            # Mid-cycle, the victim mid-task (a block run reads its entries, then spends
            # most of its time in the slow processor before its write and ack).
            while not _task_ids(log, "received") - _task_ids(log, "succeeded"):
                assert time.monotonic() < deadline, "the cycle never started on the victim"
                time.sleep(0.005)
        finally:
            os.killpg(victim.pid, signal.SIGKILL)  # main process and pool
            victim.wait()
        lost = _task_ids(log, "received") - _task_ids(log, "succeeded")
        assert lost, "the victim held no task when killed"
        killed = time.monotonic()
        cycle = int(redis_client.get(s.key("corec:cycle:seq")) or 0)
        deadline = time.monotonic() + 120
        while redis_client.hget(s.key(f"corec:cycle:{cycle}"), "complete") != b"True":
            assert time.monotonic() < deadline, "the cycle never completed"
            time.sleep(0.5)
    results: dict[tuple[str, int], dict] = {}
    for _, f in redis_client.xrange(s.key(BLOCK_RESULTS)):
        r = json.loads(f[b"d"])
        assert results.setdefault((r["block_id"], r["cycle"]), r) == r  # republished as is
    assert len(results) == 120
    processed = sum(r["inputs"] for r in results.values())
    # Every entry once: all processed, none twice, none left pending or unread.
    assert processed == ENTRIES
    assert redis_client.xpending(key, feed_group("fed"))["pending"] == 0
    (group,) = [g for g in redis_client.xinfo_groups(key) if g["name"] == b"corec_block:fed"]
    assert group["last-delivered-id"] == redis_client.xrevrange(key, count=1)[0][0]
    print(f"\n{delivery}: {len(lost)} tasks lost with the victim, cycle complete "
          f"{time.monotonic() - killed:.1f} s after SIGKILL; {processed} entries processed once")
