"""Entities per second through ``SymbioticBlock.run`` on one core, vs the seed's design.

Value: 1,000-entity ``sensor_swarm`` blocks (the sample's ``enjambre_sensor`` shards)
run cycle after cycle; each run selects, processes, validates, updates, computes
fitness, self-repairs and zstd-compresses its wire records.

Baseline: the seed's block run, ``asyncio.gather`` over one coroutine per entity (each
returning ``{"valor": random.random()}``) and a ``struct.pack("!Ibf?", ...)`` per
result; it does less (no validation, fitness, repair or compression).

``BENCH_PROFILE=1`` also prints a cProfile of the vectorised runs to stderr; the
share of time spent in zstd compression always goes to stderr.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import random
import struct
import sys
import time
from pathlib import Path

from benchmarks._common import RUNS, emit, sized
from corec_tasks.blocks.builtin import default_registry
from corec_tasks.blocks.entities import EntityArrays
from corec_tasks.blocks.model import SymbioticBlock, compress_messages, specs_from_config
from corec_tasks.config import load_config

SEED = Path(__file__).resolve().parent.parent / "tests" / "data" / "seed_sample_config.json"
BLOCKS = sized("BENCH_BLOCKS", 50, 5)
CYCLES = sized("BENCH_CYCLES", 20, 2)
BASELINE_BLOCKS = sized("BENCH_BASELINE_BLOCKS", 20, 2)


def _blocks() -> list[SymbioticBlock]:
    config = load_config(SEED, check_plugin_paths=False)
    specs = specs_from_config([b for b in config.bloques if b.id == "enjambre_sensor"])
    return [
        SymbioticBlock(spec, EntityArrays.fresh(ids, spec.canal)) for spec, ids in specs[:BLOCKS]
    ]


def _vector_run(blocks: list[SymbioticBlock], first_cycle: int) -> float:
    registry = default_registry()
    done = 0
    start = time.perf_counter()
    for cycle in range(first_cycle, first_cycle + CYCLES):
        for block in blocks:
            done += block.run(cycle, registry, now=0.0).selected
    return done / (time.perf_counter() - start)


async def _seed_block(ids: list[int], canal: int) -> list[bytes]:
    async def entity() -> dict[str, float]:
        return {"valor": random.random()}

    results = await asyncio.gather(*(entity() for _ in ids))
    return [
        struct.pack("!Ibf?", i, canal, r["valor"], True) for i, r in zip(ids, results, strict=True)
    ]


def _baseline_run() -> float:
    ids = list(range(1000))

    async def many() -> int:
        done = 0
        for _ in range(BASELINE_BLOCKS):
            done += len(await _seed_block(ids, 1))
        return done

    start = time.perf_counter()
    done = asyncio.run(many())
    return done / (time.perf_counter() - start)


def _zstd_share(blocks: list[SymbioticBlock]) -> None:
    data = blocks[0].entities.pack_wire()
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        compress_messages(data)
    per_block = (time.perf_counter() - start) / n
    print(
        f"bench_block_entities_per_s: zstd level 3 of one block's {len(data)} wire bytes: "
        f"{per_block * 1e6:.1f} µs",
        file=sys.stderr,
    )


def main() -> None:
    """Emit ``block_entities_per_s``: vectorised block runs vs the seed's gather + pack."""
    blocks = _blocks()
    _vector_run(blocks, 0)  # warm up: first-touch, caches
    values = [_vector_run(blocks, CYCLES * (i + 1)) for i in range(RUNS)]
    baseline = [_baseline_run() for _ in range(RUNS)]
    median = sorted(values)[len(values) // 2]
    print(
        f"bench_block_entities_per_s: {1e6 * 1000 / median:.1f} µs per 1,000-entity block run",
        file=sys.stderr,
    )
    _zstd_share(blocks)
    if os.environ.get("BENCH_PROFILE"):
        profile = cProfile.Profile()
        profile.runcall(_vector_run, blocks, 10_000)
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(12)
    emit("block_entities_per_s", values, "entities/s", baseline)


if __name__ == "__main__":
    main()
