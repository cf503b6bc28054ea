"""cycle_wall_s: wall time of one full cycle of the shipped config (the seed's sample,
1,001,000 entities, and the plugins' blocks: every registered block) on 2 worker
processes, persistence into `bloques` included.

Value: chunks of COREC_BLOCK_CHUNK blocks per task message. Baseline, same run: one
block per message (what a per-block Celery task costs). A chunk-size sweep goes to
stderr, to choose the default (not in smoke mode).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks._common import RUNS, SMOKE, bench_env, emit, full_cycle, seed_nucleus


def main() -> None:
    with bench_env():
        settings, nucleus, blocks = seed_nucleus()
        from corec_tasks.procs import managed, wait_for_workers, worker_cmd

        chunk = settings.env.block_chunk

        def wall(size: int) -> float:
            return float(full_cycle(nucleus, blocks, size)["client_wall_s"])

        with tempfile.TemporaryDirectory() as logs, managed(
            worker_cmd("bench", concurrency=2), Path(logs) / "worker.log"
        ):
            wait_for_workers(1)
            wall(chunk)  # warm-up: imports, first fit of the smart blocks' models
            for size in () if SMOKE else (16, 31, 62, 124, 248):
                print(f"  chunk {size:>4}: {wall(size):.3f} s", file=sys.stderr)
            values = [wall(chunk) for _ in range(RUNS)]
            baseline = [wall(1) for _ in range(1 if SMOKE else max(3, RUNS // 2))]
        print(f"  {blocks} blocks a cycle", file=sys.stderr)
        emit("cycle_wall_s", values, "s", baseline)


if __name__ == "__main__":
    main()
