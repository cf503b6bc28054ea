"""cycle_wall_s: wall time of one full cycle of the seed's sample config (992 blocks,
1,002,000 entities) on 2 worker processes, persistence into `bloques` included.

Value: chunks of COREC_BLOCK_CHUNK blocks per task message. Baseline, same run: one
block per message (what a per-block Celery task costs). A chunk-size sweep goes to
stderr, to choose the default.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from benchmarks._common import RUNS, bench_env, emit

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    with bench_env():
        os.environ["COREC_CONFIG"] = str(ROOT / "corec_config.json")
        from corec_tasks.cli.blocks_cmd import run_cycles
        from corec_tasks.nucleus import Nucleus
        from corec_tasks.procs import managed, wait_for_workers, worker_cmd
        from corec_tasks.settings import load_settings
        from corec_tasks.storage.migrate import upgrade

        settings = load_settings()
        upgrade(settings.database_url)
        nucleus = Nucleus(settings)
        nucleus.initialize()
        nucleus.modules["registry"].run()
        chunk = settings.env.block_chunk

        def wall(size: int) -> float:
            record = run_cycles(nucleus, 1, size, timeout=600, quiet=True)[0]
            assert record["ran"] == 992 and record["persisted"] == 992, record
            return float(record["client_wall_s"])

        with tempfile.TemporaryDirectory() as logs, managed(
            worker_cmd("bench", concurrency=2), Path(logs) / "worker.log"
        ):
            wait_for_workers(1)
            wall(chunk)  # warm-up: imports, first fit of the smart blocks' models
            for size in (16, 31, 62, 124, 248):
                print(f"  chunk {size:>4}: {wall(size):.3f} s", file=sys.stderr)
            values = [wall(chunk) for _ in range(RUNS)]
            baseline = [wall(1) for _ in range(max(3, RUNS // 2))]
        emit("cycle_wall_s", values, "s", baseline)


if __name__ == "__main__":
    main()
