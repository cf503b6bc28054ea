"""Several worker nodes (network namespaces), started with the README's `make workers`.

The servers (a Redis of the test's own, PostgreSQL through a relay) stay in the test's
namespace. Cycle 1: node 1's link is cut for 60 s mid-cycle, then restored. Cycle 2:
node 2's worker (its whole process group) is SIGKILLed mid-cycle. Under the shipped
delivery settings every block of both cycles lands in ``bloques`` exactly once within
two minutes, and each cycle is recorded complete.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from corec_tasks.blocks.engine import persist_block_results
from corec_tasks.nucleus import Nucleus
from corec_tasks.procs import start, stop
from corec_tasks.settings import Settings, load_settings
from corec_tasks.storage.migrate import upgrade
from tests.integration import netns
from tests.integration.own_redis import free_port, own_redis
from tests.integration.workers import Beat, celery, cycle_rows, wait_for_nodes

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"
BLOCKS = 40
RECOVERY_S = 120


def _dispatch(settings: Settings, client: redis.Redis) -> int:
    before = int(client.get(settings.key("corec:cycle:seq")) or 0)
    call = celery("call", "corec.blocks.cycle", "--kwargs", '{"chunk": 1}')
    assert call.returncode == 0, call.stderr
    deadline = time.monotonic() + 30
    while int(client.get(settings.key("corec:cycle:seq")) or 0) == before:
        assert time.monotonic() < deadline, "the cycle was never dispatched"
        time.sleep(0.05)
    return before + 1


def _wait_landed(settings: Settings, client: redis.Redis, cycle: int, since: float) -> float:
    """Seconds from ``since`` until every block of ``cycle`` is in ``bloques`` (landing
    what the chord callback has not, and sending again the blocks of a message lost to
    a kill just after its BRPOP, as beat's ``corec.blocks.persist`` does every 5 s)."""
    beat = Beat()
    while True:
        beat.tick()
        persist_block_results(settings, client)
        rows = cycle_rows(settings, cycle)
        if rows[0] >= BLOCKS:
            return time.monotonic() - since
        assert time.monotonic() - since < RECOVERY_S, f"cycle {cycle}: {rows[0]} of {BLOCKS}"
        time.sleep(0.5)


@pytest.mark.timeout(420)
def test_partitioned_and_killed_nodes_lose_no_block(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "nodes_config.json"))
    with ExitStack() as stack:
        nodes = stack.enter_context(netns.nodes(2))
        binds = ("127.0.0.1", *(n.server for n in nodes))
        server = stack.enter_context(own_redis(tmp_path / "redis", binds))
        relay = stack.enter_context(
            netns.TcpRelay(settings.database_url, [n.server for n in nodes], free_port()))
        monkeypatch.setenv("REDIS_URL", server.url)
        settings = load_settings()
        upgrade(settings.database_url)
        nucleus = Nucleus(settings)
        nucleus.initialize()
        nucleus.modules["registry"].run()
        assert nucleus.store.count() == BLOCKS
        client = redis.Redis.from_url(settings.redis_url)
        stack.callback(client.close)

        workers = {}
        for node in nodes:
            env = dict(os.environ,
                       REDIS_URL=f"redis://{node.server}:{server.port}/0",
                       DATABASE_URL=relay.url_for(settings.database_url, node.server))  # fmt: skip
            cmd = node.command("make", "-C", str(netns.repo_root()), "workers", "WORKERS=2",
                               f"NODE=node{node.index}@%h")  # fmt: skip
            workers[node.index] = start(cmd, tmp_path / f"node{node.index}.log", env)
            stack.callback(stop, workers[node.index])
        wait_for_nodes(2, tmp_path, timeout=120)

        # Cycle 1: node 1 cut off for 60 s, one second into the cycle.
        cycle1 = _dispatch(settings, client)
        time.sleep(1.0)
        nodes[0].cut()
        cut_at = time.monotonic()
        assert cycle_rows(settings, cycle1)[0] < BLOCKS, "cycle 1 ended before the cut"
        try:
            took1 = _wait_landed(settings, client, cycle1, cut_at)
            time.sleep(max(0.0, 60 - (time.monotonic() - cut_at)))
        finally:
            nodes[0].restore()

        # Cycle 2: node 2's worker killed, one second into the cycle.
        cycle2 = _dispatch(settings, client)
        time.sleep(1.0)
        os.killpg(workers[2].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        assert cycle_rows(settings, cycle2)[0] < BLOCKS, "cycle 2 ended before the kill"
        took2 = _wait_landed(settings, client, cycle2, killed_at)

        time.sleep(5)  # anything still in flight (a late duplicate) would land now
        for cycle in (cycle1, cycle2):
            assert cycle_rows(settings, cycle) == (BLOCKS, BLOCKS)
            deadline = time.monotonic() + 60
            record: dict[bytes, bytes] = {}
            while time.monotonic() < deadline:
                record = client.hgetall(settings.key(f"corec:cycle:{cycle}"))
                if record:
                    break
                time.sleep(0.5)
            assert record.get(b"ran") == str(BLOCKS).encode(), record
        print(f"partition: all blocks landed {took1:.1f} s after the cut; "
              f"node kill: {took2:.1f} s after the kill")
