"""Resident memory per entity: EntityArrays rows vs the seed's Python object per entity.

Holds the seed sample's ``bloques`` (1,001,000 entities in 991 blocks) as
SymbioticBlocks over EntityArrays, and, as the baseline, as one plain Python object
per entity (the seed's design: ``id`` str, ``canal``, ``valor``, ``activo``,
``failures``). Each measurement runs in a fresh interpreter and reads the resident
set size from ``/proc/self/statm`` before and after building, with every byte
touched (values written), so lazily mapped zero pages are not under-counted.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from benchmarks._common import RUNS, SMOKE, emit

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "tests" / "data" / "seed_sample_config.json"
#: The Python-object baseline takes seconds a run; three runs are enough for a median.
BASELINE_RUNS = 1 if SMOKE else 3


class PyEntity:
    """The seed's entity as an object: a plain class, so a ``__dict__`` per entity."""

    def __init__(self, ident: str, canal: int, valor: float, activo: bool) -> None:
        self.id = ident
        self.canal = canal
        self.valor = valor
        self.activo = activo
        self.failures = 0


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(kind: str) -> None:
    """Build the sample's entities one way; print resident bytes per entity."""
    import gc

    from corec_tasks.blocks.entities import EntityArrays
    from corec_tasks.blocks.model import SymbioticBlock, specs_from_config
    from corec_tasks.config import load_config

    config = load_config(SEED, check_plugin_paths=False)
    specs = specs_from_config(config.bloques)
    total = sum(len(ids) for _, ids in specs)
    gc.collect()
    before = _rss()
    held: list[object] = []
    if kind == "arrays":
        for spec, ids in specs:
            block = SymbioticBlock(spec, EntityArrays.fresh(ids, spec.canal))
            block.entities.value[:] = 0.5
            held.append(block)
    else:
        rand = random.Random(0)
        for spec, ids in specs:
            held.append([PyEntity(f"m{i}", spec.canal, rand.random(), True) for i in ids.tolist()])
    gc.collect()
    print((_rss() - before) / total)


def _measure(kind: str) -> float:
    code = f"from benchmarks.bench_entity_bytes import _child; _child({kind!r})"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Emit ``entity_bytes``: medians of resident bytes per entity, arrays vs objects."""
    values = [_measure("arrays") for _ in range(RUNS if SMOKE else max(RUNS, 5))]
    baseline = [_measure("objects") for _ in range(BASELINE_RUNS)]
    emit("entity_bytes", values, "bytes/entity", baseline)


if __name__ == "__main__":
    main()
