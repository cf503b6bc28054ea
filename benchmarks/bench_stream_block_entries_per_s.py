"""stream_block_entries_per_s: market_data entries processed per second by stream-fed
blocks on 2 worker processes, from the first XADD to the cycle's results landed in
``bloques`` (read, one payload entity per entry, CAS write, ack, publish, persist).

Blocks: ``BENCH_STREAM_BLOCKS`` (default 20) blocks of 1,000 ``security_node``
entities bound to ``market_data``; each run publishes ``BENCH_STREAM_N`` (default
20,000: one entry per entity) entries, then runs one cycle (chunks of half the
blocks, so both worker processes work). Baseline, same run and entry count: the
persister alone (``persist_once`` of market_data into ``eventos``), publish included.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks._common import RUNS, bench_env, emit, sized

BLOCKS = sized("BENCH_STREAM_BLOCKS", 20, 2)
N = sized("BENCH_STREAM_N", BLOCKS * 1000, BLOCKS * 1000)


def _payloads(n: int, run: int) -> list[dict[str, object]]:
    return [{"symbol": "BTCUSDT", "price": 35_000.0 + (i % 1000) / 100, "seq": i, "run": run}
            for i in range(n)]  # fmt: skip


def main() -> None:
    with bench_env() as env, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "stream_bench.json"
        config.write_text(json.dumps({"instance_id": "bench", "plugins": [], "bloques": [
            {"id": "fed", "canal": 1, "entidades": BLOCKS * 1000, "entidades_por_bloque": 1000,
             "procesador": "security_node", "stream": "market_data"}]}))  # fmt: skip
        os.environ["COREC_CONFIG"] = str(config)
        from corec_tasks.cli.blocks_cmd import run_cycles
        from corec_tasks.nucleus import Nucleus
        from corec_tasks.procs import managed, wait_for_workers, worker_cmd
        from corec_tasks.settings import load_settings
        from corec_tasks.storage.migrate import upgrade
        from corec_tasks.streams.bus import StreamBus
        from corec_tasks.streams.persister import persist_once
        from plugins.trading.channels import MARKET_DATA

        settings = load_settings()
        upgrade(env.database_url)
        nucleus = Nucleus(settings)
        nucleus.initialize()
        nucleus.modules["registry"].run()
        bus = StreamBus(settings)

        def fed(run: int) -> float:
            t0 = time.perf_counter()
            bus.publish_many(MARKET_DATA, _payloads(N, run))
            record = run_cycles(nucleus, 1, max(1, BLOCKS // 2), timeout=600, quiet=True)[0]
            elapsed = time.perf_counter() - t0
            assert record["complete"] and record["persisted"] == BLOCKS, record
            got = sum(int((m.get("last_result") or {}).get("inputs", 0))
                      for m in nucleus.store.metas())  # fmt: skip
            assert got == N, (got, N)
            return N / elapsed

        def persister(run: int) -> float:
            # Its own prefix: fresh streams and consumer groups, the blocks' untouched.
            os.environ["COREC_REDIS_PREFIX"] = f"{env.prefix}persist{run}:"
            s = load_settings()
            try:
                with StreamBus(s) as own:
                    t0 = time.perf_counter()
                    own.publish_many(MARKET_DATA, _payloads(N, run))
                    stats = persist_once(s, streams=[MARKET_DATA], consumer="bench",
                                         max_batches=1_000_000)  # fmt: skip
                    elapsed = time.perf_counter() - t0
            finally:
                os.environ["COREC_REDIS_PREFIX"] = env.prefix
            assert stats.inserted == N, stats
            return N / elapsed

        with managed(worker_cmd("bench", concurrency=2), Path(tmp) / "worker.log"):
            wait_for_workers(1)
            fed(-1)  # warm-up: worker imports, first connections
            values = [fed(run) for run in range(RUNS)]
        baseline = [persister(run) for run in range(RUNS)]
        bus.close()
        emit("stream_block_entries_per_s", values, "entries/s", baseline)


if __name__ == "__main__":
    main()
