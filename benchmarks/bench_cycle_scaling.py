"""cycle_scaling: how a cycle's wall time follows the worker count.

One full cycle of the shipped config (every registered block, the seed sample's
1,001,000 entities among them, persisted into `bloques`) on one worker node with 1, 2
and 4 prefork processes (1 and 2 in smoke mode), each at a couple of chunk sizes
(blocks per task message) sized to that count: the best chunk is the figure. One JSON
line per process count, ``cycle_scaling_<n>p``; the baseline is the 1-process figure
of the same run, so ``ratio`` < 1 is a speed-up.

The CI machine has 2 cores shared by the client, the workers, Redis and PostgreSQL:
4 processes there measure oversubscription, not a 4-core node.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks._common import RUNS, SMOKE, bench_env, emit, full_cycle, seed_nucleus

PROCESSES = (1, 2) if SMOKE else (1, 2, 4)


def chunk_sizes(blocks: int, processes: int) -> tuple[int, ...]:
    """Four and eight messages per process: fewer round trips against better balance."""
    sizes = (-(-blocks // (4 * processes)), -(-blocks // (8 * processes)))
    return sizes[:1] if SMOKE else sizes


def main() -> None:
    with bench_env():
        _settings, nucleus, blocks = seed_nucleus()
        from corec_tasks.procs import managed, wait_for_workers, worker_cmd

        def wall(size: int) -> float:
            return float(full_cycle(nucleus, blocks, size)["client_wall_s"])

        # Rounds interleave the process counts, so load from other jobs on the machine
        # drifts over all of them alike instead of biasing whichever ran last.
        walls: dict[int, dict[int, list[float]]] = {n: {} for n in PROCESSES}
        for _ in range(RUNS):
            for n in PROCESSES:
                with tempfile.TemporaryDirectory() as logs, managed(
                    worker_cmd(f"scale{n}", concurrency=n), Path(logs) / "worker.log"
                ):
                    wait_for_workers(1)
                    wall(chunk_sizes(blocks, n)[0])  # warm-up: imports, the processes' first fit
                    for size in chunk_sizes(blocks, n):
                        walls[n].setdefault(size, []).append(wall(size))
        best: dict[int, list[float]] = {}
        for n in PROCESSES:
            for size, values in walls[n].items():
                print(f"  {n}p chunk {size:>4}: median {statistics.median(values):.3f} s "
                      f"({', '.join(f'{v:.3f}' for v in values)})", file=sys.stderr)  # fmt: skip
            best[n] = min(walls[n].values(), key=statistics.median)
        for n in PROCESSES:
            emit(f"cycle_scaling_{n}p", best[n], "s", best[1])


if __name__ == "__main__":
    main()
