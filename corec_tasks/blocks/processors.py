"""Entity processors: an entity's *function* is its block's processor.

A block names its processor in config (``procesador``); plugins register theirs in a
:class:`ProcessorRegistry`. Two kinds:

* **vector**: ``fn(ctx) -> (values, errors)``, float32 values and a bool error mask,
  one per selected entity; the fast path (arrays in, arrays out).
* **async**: ``async fn(entity_id, payload) -> float``, one coroutine per entity, for
  I/O; :func:`run_async` gathers them under a concurrency bound and a per-entity
  timeout.

Both entity kinds of seed 004 §2.1 exist. *No-input* entities (MicroCeluEntidad) get
``ctx.payloads is None``. *Payload* entities (CeluEntidad) get the payloads read from a
stream channel: entity ``i`` of the selection processes ``payloads[i % len(payloads)]``
(so a few payloads fan out over many entities); when the list is empty every entity
errors, because a payload entity has nothing to process. A processor registered with
``needs_payload=True`` treats ``payloads is None`` the same as an empty list.

Runs are deterministic: ``ctx.rng`` is seeded from ``(block_id, cycle)``, so a
redelivered task for the same block-cycle computes the same values (this is what
makes a block run idempotent).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import math
import struct
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, overload

import numpy as np
import numpy.typing as npt

from corec_tasks.config import BlockConfig
from corec_tasks.contracts import PROCESSOR_CONTRACT_VERSION, check_processor
from corec_tasks.errors import CorecError, PluginError

F32 = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]
Payload: TypeAlias = dict[str, Any]
VectorFn: TypeAlias = Callable[["ProcessorContext"], tuple[np.ndarray, np.ndarray]]
AsyncFn: TypeAlias = Callable[[int, Payload | None], Awaitable[float]]
Kind = Literal["vector", "async"]

#: Keys a payload's numeric reading is taken from, in order.
PAYLOAD_VALUE_KEYS = ("valor", "value", "price")


class ProcessorError(CorecError):
    """A processor is misregistered or misbehaved."""


class ProcessorNotFound(ProcessorError):
    """No processor of that name is registered."""


class ProcessorUnavailable(CorecError):
    """A service the processor needs is down (its database, say): the block's run is
    not recorded and its task is retried later, so the entries a stream-fed block took
    stay pending instead of being acked as processed. Any other exception from a
    processor errors every selected entity and the run is recorded."""


@dataclass(frozen=True, slots=True)
class EntryMeta:
    """Where a stream-fed entity's payload came from: the entry id, the producer's
    instance id (``i``) and the entry's signature (``s``, None if unsigned). A
    processor that changes something outside the block keys it on these, so a copied
    or redelivered entry does nothing twice."""

    id: str
    instance_id: str
    signature: str | None


# -- deterministic randomness ----------------------------------------------------------


def _seed_words(block_id: str, cycle: int) -> tuple[int, int]:
    # blake2b of (cycle, block_id) -> a PCG64 (state, increment); mixing both inputs
    # through a hash keeps neighbouring cycles' streams unrelated.
    digest = hashlib.blake2b(struct.pack("<q", cycle) + block_id.encode(), digest_size=32).digest()
    return int.from_bytes(digest[:16], "little"), int.from_bytes(digest[16:], "little") | 1


def _pcg_state(block_id: str, cycle: int) -> Any:  # numpy types it as a private TypedDict
    state, inc = _seed_words(block_id, cycle)
    pcg = {"state": state, "inc": inc}
    return {"bit_generator": "PCG64", "state": pcg, "has_uint32": 0, "uinteger": 0}


def block_rng(block_id: str, cycle: int) -> np.random.Generator:
    """A new generator for one block-cycle; the same inputs give the same stream."""
    bits = np.random.PCG64(0)
    bits.state = _pcg_state(block_id, cycle)
    return np.random.Generator(bits)


class _ThreadRng(threading.local):
    """One reusable generator per thread; building a Generator costs ~7 µs a run."""

    def __init__(self) -> None:
        self.bits = np.random.PCG64(0)
        self.gen = np.random.Generator(self.bits)


_thread_rng = _ThreadRng()


def reseeded_thread_rng(block_id: str, cycle: int) -> np.random.Generator:
    """This thread's generator, reset to the stream of :func:`block_rng`.

    Valid until the next call in the same thread; a processor must not keep it.
    """
    _thread_rng.bits.state = _pcg_state(block_id, cycle)
    return _thread_rng.gen


# -- context and specs -----------------------------------------------------------------


@dataclass(slots=True)
class ProcessorContext:
    """What a processor sees for one block run: the selected entities and the block."""

    block_id: str
    cycle: int
    ids: npt.NDArray[np.uint32]
    channel: int
    prev_values: F32
    rng: np.random.Generator
    payloads: Sequence[Payload] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    #: Stream-fed blocks: one per payload, in the same order.
    entries: Sequence[EntryMeta] | None = None

    @classmethod
    def create(
        cls,
        block_id: str,
        cycle: int,
        ids: npt.NDArray[np.uint32],
        channel: int,
        prev_values: F32,
        payloads: Sequence[Payload] | None = None,
        state: dict[str, Any] | None = None,
    ) -> ProcessorContext:
        """A context with its own generator seeded from ``(block_id, cycle)``."""
        rng = block_rng(block_id, cycle)
        state = {} if state is None else state
        return cls(block_id, cycle, ids, channel, prev_values, rng, payloads, state)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def payload_for(self, i: int) -> Payload | None:
        """The payload of selected entity ``i``: ``payloads[i % len]``; None without payloads."""
        if not self.payloads:
            return None
        return self.payloads[i % len(self.payloads)]


@dataclass(frozen=True, slots=True)
class ProcessorSpec:
    """A registered processor and how to call it."""

    name: str
    kind: Kind
    fn: VectorFn | AsyncFn
    needs_payload: bool = False
    smart: bool = False
    description: str = ""


class ProcessorRegistry:
    """Processors by name; a miss raises :class:`ProcessorNotFound` naming the known ones."""

    def __init__(self) -> None:
        self._specs: dict[str, ProcessorSpec] = {}

    @overload
    def register(
        self,
        name: str,
        fn: None = None,
        *,
        kind: Kind | None = None,
        needs_payload: bool = False,
        smart: bool = False,
        description: str = "",
        replace: bool = False,
        contract_version: str = PROCESSOR_CONTRACT_VERSION,
    ) -> Callable[[Any], Any]: ...

    @overload
    def register(
        self,
        name: str,
        fn: VectorFn | AsyncFn,
        *,
        kind: Kind | None = None,
        needs_payload: bool = False,
        smart: bool = False,
        description: str = "",
        replace: bool = False,
        contract_version: str = PROCESSOR_CONTRACT_VERSION,
    ) -> ProcessorSpec: ...

    def register(
        self,
        name: str,
        fn: VectorFn | AsyncFn | None = None,
        *,
        kind: Kind | None = None,
        needs_payload: bool = False,
        smart: bool = False,
        description: str = "",
        replace: bool = False,
        contract_version: str = PROCESSOR_CONTRACT_VERSION,
    ) -> ProcessorSpec | Callable[[Any], Any]:
        """Register ``fn`` under ``name``; without ``fn``, return a decorator.

        ``kind`` defaults to ``"async"`` for coroutine functions, else ``"vector"``.
        Registering a taken name raises unless ``replace`` is true. ``fn`` is checked
        against the processor contract (``corec_tasks.contracts``) at the
        ``contract_version`` its plugin was written for.
        """

        def add(func: Any) -> Any:
            if name in self._specs and not replace:
                raise ProcessorError(f"processor {name!r} is already registered")
            resolved = kind or ("async" if inspect.iscoroutinefunction(func) else "vector")
            if resolved not in ("vector", "async"):
                raise ProcessorError(f"processor {name!r}: kind must be 'vector' or 'async'")
            try:
                check_processor(name, func, resolved, contract_version)
            except PluginError as exc:
                raise ProcessorError(str(exc)) from None
            doc = description or (inspect.getdoc(func) or "").split("\n", 1)[0]
            self._specs[name] = ProcessorSpec(name, resolved, func, needs_payload, smart, doc)
            return func

        if fn is None:
            return add
        add(fn)
        return self._specs[name]

    def get(self, name: str) -> ProcessorSpec:
        """The processor named ``name``."""
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs)) or "(none)"
            raise ProcessorNotFound(
                f"processor {name!r} is not registered; known processors: {known}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs


# -- async per-entity processors --------------------------------------------------------


async def gather_async(
    fn: AsyncFn,
    ctx: ProcessorContext,
    concurrency: int = 64,
    timeout_s: float = 1.0,
    needs_payload: bool = False,
) -> tuple[F32, Mask]:
    """Await ``fn`` once per selected entity, at most ``concurrency`` at a time.

    An exception, a timeout or a non-finite result marks that entity errored; nothing
    raises. Payload entities without payloads error without being called.
    """
    n = len(ctx)
    values = np.zeros(n, dtype=np.float32)
    errors = np.ones(n, dtype=np.bool_)
    if n == 0 or payloads_missing(ctx, needs_payload):
        return values, errors
    semaphore = asyncio.Semaphore(max(1, concurrency))
    ids = ctx.ids.tolist()

    async def one(i: int) -> None:
        async with semaphore:
            try:
                result = await asyncio.wait_for(fn(ids[i], ctx.payload_for(i)), timeout_s)
                value = float(result)
            except Exception:
                # The entity failed (or timed out); the block's error rate records it.
                return
            if math.isfinite(value):
                values[i] = value
                errors[i] = False

    await asyncio.gather(*(one(i) for i in range(n)))
    return values, errors


def run_async(
    fn: AsyncFn,
    ctx: ProcessorContext,
    concurrency: int = 64,
    timeout_s: float = 1.0,
    needs_payload: bool = False,
) -> tuple[F32, Mask]:
    """Synchronous :func:`gather_async`, callable with or without a running event loop.

    Without a loop in this thread it uses ``asyncio.run``. With one (a caller inside
    async code) it cannot block that loop's thread on itself, so it runs a fresh loop
    in a helper thread and waits; async callers should ``await gather_async`` instead.
    """
    coro = gather_async(fn, ctx, concurrency, timeout_s, needs_payload)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="corec-async") as pool:
        return pool.submit(asyncio.run, coro).result()


def payloads_missing(ctx: ProcessorContext, needs_payload: bool) -> bool:
    """True when the entities are payload entities but no payload arrived."""
    if ctx.payloads is None:
        return needs_payload
    return len(ctx.payloads) == 0


def payload_value(payload: Payload | None) -> float:
    """The numeric reading of a payload (first of :data:`PAYLOAD_VALUE_KEYS`), else NaN."""
    if payload:
        for key in PAYLOAD_VALUE_KEYS:
            raw = payload.get(key)
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                return float(raw)
    return math.nan


def processor_for_block(block: BlockConfig) -> str:
    """The block's configured ``procesador``, else a default by block id and channel."""
    if block.procesador:
        return block.procesador
    if block.id.startswith("enjambre") or block.canal == 1:
        return "sensor_swarm"
    return {2: "security_node", 3: "isolation_forest"}.get(block.canal, "example")
