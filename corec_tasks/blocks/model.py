"""Symbiotic blocks: a block's entities, one run of its processor, fitness and self-repair.

Pure logic (no Redis, Celery or PostgreSQL): the Redis state store and the Celery
cycle tasks call :meth:`SymbioticBlock.run` and store :meth:`SymbioticBlock.to_state`.

**Fitness** of a run, with ``e`` the error rate among the selected entities and ``σ``
the (population) standard deviation of the valid values::

    fitness = (1 - e) * (1 - min(1, 2σ))

Valid values lie in [0, 1], so σ <= 0.5 and fitness lies in [0, 1]: 1 for a block
whose entities all succeed and agree, falling with errors and with spread. It is 0
when no value is valid.

**Self-repair** (seed 004 §2.2 step 6, thresholds from ``autoreparacion``), after
each run, over the whole block: an inactive entity with ``failures >= 2`` is replaced
by a fresh one (value 0, active, no failures) *in its slot*, keeping its id, so the
block's id set never changes. When the run was unhealthy (error rate >
``max_errores`` or fitness < ``min_fitness``) the threshold drops to
``failures >= 1``: every inactive entity is replaced.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import zstandard

from corec_tasks.blocks.entities import EntityArrays, EntityFormatError
from corec_tasks.blocks.processors import (
    AsyncFn,
    EntryMeta,
    Payload,
    ProcessorContext,
    ProcessorRegistry,
    ProcessorSpec,
    ProcessorUnavailable,
    VectorFn,
    payloads_missing,
    processor_for_block,
    reseeded_thread_rng,
    run_async,
)
from corec_tasks.config import BlockConfig
from corec_tasks.errors import ConfigurationError

log = logging.getLogger(__name__)

#: zstd level for block messages (seed 004 §2.2 step 7).
ZSTD_LEVEL = 3
_FITNESS = np.dtype("<f8")


class _Compressors(threading.local):
    # A ZstdCompressor is reusable but not safe to share between threads.
    def __init__(self) -> None:
        self.zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)


_compressors = _Compressors()


def compress_messages(data: bytes) -> bytes:
    """zstd level 3, with this thread's compressor."""
    return _compressors.zstd.compress(data)


@dataclass(frozen=True, slots=True)
class BlockSpec:
    """What a block is: identity, channel, processor, load and self-repair thresholds."""

    id: str
    group: str
    canal: int
    processor: str
    carga: float = 1.0
    max_errores: float = 0.05
    min_fitness: float = 0.2
    #: Size cap, twice the configured ``entidades_por_bloque``; a block past it splits.
    max_entities: int = 2000
    #: The stream feeding its payload entities (config ``stream``), else None.
    stream: str | None = None
    #: ``max_size_mb`` in bytes: the block's stored entity state may not exceed it.
    max_bytes: int = 1 << 20
    #: Redirection leaves the block at least this many entities (config ``min_entidades``).
    min_entities: int = 1

    def fits(self, entities: int) -> bool:
        """Whether ``entities`` entities stay within ``max_bytes`` of state."""
        return state_bytes(entities) <= self.max_bytes

    def max_fitting(self) -> int:
        """The most entities whose state fits in ``max_bytes``."""
        return max(0, (self.max_bytes - STATE_OVERHEAD) // ENTITY_STATE_BYTES)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlockSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


#: Bytes of an entity in the stored state, and of the state's header (entities.py).
ENTITY_STATE_BYTES = 11
STATE_OVERHEAD = 8


def state_bytes(entities: int) -> int:
    """Size of the stored entity state of a block of ``entities`` entities."""
    return STATE_OVERHEAD + ENTITY_STATE_BYTES * entities


class BlockTooLarge(ConfigurationError):
    """A block's state would exceed its ``max_size_mb``; nothing was written."""

    def __init__(self, block_id: str, entities: int, max_bytes: int) -> None:
        message = (f"block {block_id!r}: {entities} entities need {state_bytes(entities)} "
                   f"bytes of state, above its max_size_mb ({max_bytes} bytes, at most "
                   f"{max(0, (max_bytes - STATE_OVERHEAD) // ENTITY_STATE_BYTES)} "
                   f"entities)")  # fmt: skip
        super().__init__([(f"bloques.{block_id}.max_size_mb", message)])


def specs_from_config(
    blocks: Sequence[BlockConfig], id_start: int = 0
) -> list[tuple[BlockSpec, npt.NDArray[np.uint32]]]:
    """Shard each config block into blocks of ``entidades_por_bloque`` with global ids.

    A config block of ``entidades`` entities becomes ``ceil(entidades /
    entidades_por_bloque)`` blocks named ``{group}-{i:04d}`` (the last one takes the
    remainder; a single shard keeps the group's id). Ids are contiguous uint32 from
    ``id_start``, each used once across all blocks.
    """
    total = sum(b.entidades for b in blocks)
    if id_start < 0 or id_start + total > 2**32:
        raise ConfigurationError(
            [("bloques", f"{total} entities from id {id_start} do not fit in uint32 ids")]
        )
    out: list[tuple[BlockSpec, npt.NDArray[np.uint32]]] = []
    next_id = id_start
    for block in blocks:
        per = block.entidades_por_bloque
        shards = math.ceil(block.entidades / per)
        processor = processor_for_block(block)
        max_bytes = int(block.max_size_mb * (1 << 20))
        if state_bytes(min(per, block.entidades)) > max_bytes:
            # Refused at registration, never truncated: the config must change.
            raise BlockTooLarge(block.id, min(per, block.entidades), max_bytes)
        for i in range(shards):
            size = min(per, block.entidades - i * per)
            spec = BlockSpec(
                id=block.id if shards == 1 else f"{block.id}-{i:04d}",
                group=block.id,
                canal=block.canal,
                processor=processor,
                carga=block.carga,
                max_errores=block.autoreparacion.max_errores,
                min_fitness=block.autoreparacion.min_fitness,
                max_entities=2 * per,
                stream=block.stream,
                max_bytes=max_bytes,
                min_entities=block.min_entidades,
            )
            out.append((spec, np.arange(next_id, next_id + size, dtype=np.uint32)))
            next_id += size
    return out


@dataclass(slots=True)
class BlockResult:
    """The outcome of one block run; ``to_dict`` is what goes on the stream."""

    block_id: str
    group: str
    canal: int
    cycle: int
    num_entidades: int
    selected: int
    errors: int
    repaired: int
    fitness: float
    carga: float
    mean: float
    std: float
    timestamp: float
    #: Wire records of the selected entities as this run left them (before
    #: self-repair, so failures show), zstd level 3.
    messages: bytes = field(repr=False, default=b"")
    #: Why the processor failed as a whole (it raised or returned bad shapes), else None.
    processor_error: str | None = None
    #: Stream entries this run processed (stream-fed blocks), else 0.
    inputs: int = 0
    #: Measured load of this run: the share of the block's entities that had input
    #: and ran (``selected / num_entidades``).
    load: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields, without ``messages``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "messages"}


class SymbioticBlock:
    """A block of entities sharing one processor, channel, load and fitness."""

    __slots__ = ("entities", "fitness", "spec", "state")

    def __init__(
        self,
        spec: BlockSpec,
        entities: EntityArrays,
        fitness: float = 1.0,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.entities = entities
        self.fitness = fitness
        #: The processor's mutable state (a smart block's model); not in to_state.
        self.state: dict[str, Any] = {} if state is None else state

    @property
    def id(self) -> str:
        return self.spec.id

    def __len__(self) -> int:
        return len(self.entities)

    def __repr__(self) -> str:
        return f"SymbioticBlock({self.spec.id!r}, entities={len(self)}, fitness={self.fitness:.3f})"

    # -- selection -------------------------------------------------------------------

    def _window(
        self, cycle: int, window: tuple[int, int] | None = None
    ) -> slice | npt.NDArray[np.intp]:
        n = len(self.entities)
        if window is not None:
            # Payload entities: ``k`` entities from ``start`` (round-robin over the block).
            start, k = window[0] % n if n else 0, min(window[1], n)
        else:
            k = selection_size(n, self.spec.carga)
            start = (cycle * k) % n if n else 0
        # Successive cycles take successive windows of k, so every entity runs within
        # ceil(n / k) cycles; a window that does not wrap stays a cheap slice view.
        if start + k <= n:
            return slice(start, start + k)
        return (start + np.arange(k)) % n

    def select(self, cycle: int) -> npt.NDArray[np.intp]:
        """Indices run in ``cycle``: ``ceil(len * carga)`` (at least 1), rotating with it."""
        window = self._window(cycle)
        if isinstance(window, slice):
            return np.arange(window.start, window.stop, dtype=np.intp)
        return window

    # -- one run ---------------------------------------------------------------------

    def run(
        self,
        cycle: int,
        registry: ProcessorRegistry,
        payloads: Sequence[Payload] | None = None,
        now: float | None = None,
        window: tuple[int, int] | None = None,
        entries: Sequence[EntryMeta] | None = None,
    ) -> BlockResult:
        """Run the block once: select, process, validate, update, fitness, self-repair.

        Deterministic for a given block state and ``cycle`` (``now`` only sets the
        timestamp). A processor that raises errors every selected entity instead of
        failing the cycle. ``window`` ``(start, k)`` overrides the selection: a
        stream-fed block runs one entity per payload, from its round-robin cursor.
        """
        spec = self.spec
        ent = self.entities
        sel = self._window(cycle, window)
        # Read-only views: a processor that writes into its inputs must not reach
        # the block's arrays behind the update rules below.
        ids = ent.ids[sel].view()
        prev = ent.value[sel].view()
        ids.flags.writeable = prev.flags.writeable = False
        k = ids.shape[0]
        proc = registry.get(spec.processor)
        rng = reseeded_thread_rng(spec.id, cycle)
        ctx = ProcessorContext(spec.id, cycle, ids, spec.canal, prev, rng, payloads, self.state,
                               entries)  # fmt: skip
        values, errors, problem = _call(proc, ctx)

        # Valid: not flagged and in [0, 1] (NaN fails both comparisons).
        valid = values >= 0.0
        valid &= values <= 1.0
        valid &= ~errors
        invalid = ~valid
        n_valid = int(np.count_nonzero(valid))
        n_err = k - n_valid
        # Failed: failures + 1 saturating at 255, value kept; valid: failures 0.
        failures = np.minimum(ent.failures[sel], 254)
        failures += 1
        failures *= invalid
        ent.failures[sel] = failures
        ent.active[sel] = valid
        if isinstance(sel, slice):
            np.copyto(ent.value[sel], values, where=valid)
        else:
            ent.value[sel] = np.where(valid, values, prev)

        mean = std = 0.0
        if n_valid:
            good = values[valid] if n_err else values
            good64 = good.astype(np.float64)
            mean = float(good64.sum()) / n_valid
            good64 -= mean
            std = math.sqrt(float(good64 @ good64) / n_valid)
        err_rate = n_err / k if k else 0.0
        fitness = fitness_of(err_rate, std) if n_valid else 0.0
        self.fitness = fitness

        messages = compress_messages(ent.pack_wire(sel))
        unhealthy = err_rate > spec.max_errores or fitness < spec.min_fitness
        repaired = self.self_repair(threshold=1 if unhealthy else 2)
        return BlockResult(
            block_id=spec.id,
            group=spec.group,
            canal=spec.canal,
            cycle=cycle,
            num_entidades=len(ent),
            selected=k,
            errors=n_err,
            repaired=repaired,
            fitness=fitness,
            carga=spec.carga,
            mean=mean,
            std=std,
            timestamp=time.time() if now is None else now,
            messages=messages,
            processor_error=problem,
            inputs=len(payloads) if window is not None and payloads is not None else 0,
            load=k / len(ent) if len(ent) else 0.0,
        )

    def self_repair(self, threshold: int = 2) -> int:
        """Replace inactive entities with ``failures >= threshold`` in place; return how many."""
        ent = self.entities
        broken = ent.failures >= threshold
        broken &= ~ent.active
        count = int(np.count_nonzero(broken))
        if count:
            ent.value[broken] = 0.0
            ent.active[broken] = True
            ent.failures[broken] = 0
            ent.channel[broken] = self.spec.canal
        return count

    # -- storage ---------------------------------------------------------------------

    def to_state(self) -> bytes:
        """Fitness (float64) then the entities' state bytes."""
        return np.array(self.fitness, dtype=_FITNESS).tobytes() + self.entities.to_state()

    @classmethod
    def from_state(
        cls, spec: BlockSpec, data: bytes, state: dict[str, Any] | None = None
    ) -> SymbioticBlock:
        """Inverse of :meth:`to_state`."""
        if len(data) < _FITNESS.itemsize:
            raise EntityFormatError(f"block state too short ({len(data)} bytes)")
        fitness = float(np.frombuffer(data, dtype=_FITNESS, count=1)[0])
        entities = EntityArrays.from_state(memoryview(data)[_FITNESS.itemsize :])
        return cls(spec, entities, fitness, state)


def selection_size(n: int, carga: float) -> int:
    """``ceil(n * carga)``, at least 1 when ``n > 0``, at most ``n``.

    Float noise is forgiven: ``100 * 0.07`` is ``7.000000000000001``, which selects 7.
    """
    if n <= 0:
        return 0
    return min(n, max(1, math.ceil(n * carga - 1e-9)))


def fitness_of(error_rate: float, std: float) -> float:
    """``(1 - e) * (1 - min(1, 2σ))``, the fitness of a run (see the module docstring)."""
    return (1.0 - error_rate) * (1.0 - min(1.0, 2.0 * std))


def _call(
    proc: ProcessorSpec, ctx: ProcessorContext
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], str | None]:
    # Plugin code never fails a cycle: whatever it raises or returns wrongly becomes
    # errors for every selected entity, with the reason in the result.
    k = len(ctx)
    if k == 0:  # a stream-fed block with no input this cycle: nothing to call
        return np.zeros(0, np.float32), np.zeros(0, np.bool_), None
    try:
        if proc.kind == "async":
            fn = cast(AsyncFn, proc.fn)
            values, errors = run_async(fn, ctx, needs_payload=proc.needs_payload)
        elif proc.needs_payload and payloads_missing(ctx, True):
            values, errors = np.zeros(k, np.float32), np.ones(k, np.bool_)
        else:
            values, errors = cast(VectorFn, proc.fn)(ctx)
        values = np.asarray(values, dtype=np.float32)
        errors = np.asarray(errors, dtype=np.bool_)
        if values.shape != (k,) or errors.shape != (k,):
            raise ValueError(f"returned shapes {values.shape} and {errors.shape}, expected ({k},)")
        return values, errors, None
    except ProcessorUnavailable:
        raise  # not this run's fault: retried, its input kept
    except Exception as exc:
        log.warning("processor %r failed on block %s: %s", proc.name, ctx.block_id, exc)
        problem = f"processor {proc.name!r} failed: {type(exc).__name__}: {exc}"
        return np.zeros(k, np.float32), np.ones(k, np.bool_), problem
