"""Sync (seed 004 §2.2 "Redirección dinámica", §2.4 ``ModuloSincronizacion``).

Idle blocks give entities to busy ones, idle blocks of one group merge, and
oversized blocks split. Planning is pure (it reads only the metas of
:meth:`BlockStore.metas`); applying goes through :meth:`BlockStore.write`, one
compare-and-set over every block touched, so a redirection racing a block run never
loses or duplicates an entity: whoever loses re-reads and retries.

Rules, with the thresholds as keyword arguments (defaults below):

* **donor**: fitness < 0.3 and measured load < 0.2 (the EWMA of the share of its
  entities that had input and ran, kept by the engine; the spec's ``carga`` before
  its first run);
  **receiver**: fitness > 0.8.
* **redirection**: each donor gives half its entities (at least 1, keeping at least
  its spec's ``min_entities``, 1 unless configured) to the receiver with the most room
  (``max_entities - num_entidades``, lower if ``max_size_mb`` allows fewer), never
  beyond that receiver's ``max_entities``; a donor finding no room gives nothing.
* **merge**: two donors of the same group whose sizes together fit the smaller
  ``max_entities`` become one; the larger keeps its id (fewer entities move), the
  other is deleted in the same write. A block merges at most once per run.
* **split**: a block above its ``max_entities`` splits in two; the new block
  ``{id}.{n}`` (smallest free ``n``) takes the last half, with the same spec
  otherwise. A block more than twice its cap needs a split per run.

Moved entities keep id, value, active and failures; they take the receiving
block's channel, since an entity's ``canal`` is its block's (self-repair resets it
to the same). Blocks that never ran have fitness 1.0, so they are never donors.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

from corec_tasks.alerts import alert
from corec_tasks.blocks import feed
from corec_tasks.blocks.entities import EntityArrays
from corec_tasks.blocks.model import BlockSpec, SymbioticBlock, state_bytes
from corec_tasks.blocks.store import BlockNotFound, BlockStore, StoredBlock, VersionConflict
from corec_tasks.errors import CorecError
from corec_tasks.metrics import counters
from corec_tasks.modules.base import Module

log = logging.getLogger(__name__)

#: A donor runs below this fitness ...
DONOR_MAX_FITNESS = 0.3
#: ... with a measured load below this.
DONOR_MAX_LOAD = 0.2
#: A receiver runs above this fitness.
RECEIVER_MIN_FITNESS = 0.8
#: Compare-and-set attempts of one redirect/merge/split before VersionConflict.
CAS_ATTEMPTS = 10
#: Backoff between attempts: uniform in [0, attempt * this) seconds (jitter, so
#: two retrying writers do not collide in lockstep).
CAS_BACKOFF_S = 0.002

T = TypeVar("T")


class RedirectError(CorecError):
    """A redirection, merge or split was refused; the message says why."""


@dataclass(frozen=True, slots=True)
class Move:
    """``count`` entities go from block ``src`` to block ``dst``."""

    src: str
    dst: str
    count: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Merge:
    """Block ``absorb`` moves all its entities into ``keep`` and is deleted."""

    keep: str
    absorb: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Split:
    """Block ``block_id`` gives its last half to the new block ``new_id``."""

    block_id: str
    new_id: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return asdict(self)


# -- planning (pure) -------------------------------------------------------------------


def _id(meta: dict[str, Any]) -> str:
    return str(meta["spec"]["id"])


def _size(meta: dict[str, Any]) -> int:
    return int(meta["num_entidades"])


def _cap(meta: dict[str, Any]) -> int:
    # The smaller of max_entities and what fits in max_size_mb (max_bytes).
    spec = meta["spec"]
    cap = int(spec["max_entities"])
    if "max_bytes" in spec:
        cap = min(cap, BlockSpec.from_dict(spec).max_fitting())
    return cap


def load_of(meta: dict[str, Any]) -> float:
    """A block's measured load (engine.update_load); its configured ``carga`` until it
    has run."""
    load = meta.get("load")
    return float(meta["spec"]["carga"] if load is None else load)


def _is_donor(meta: dict[str, Any], donor_fitness: float, donor_load: float) -> bool:
    return float(meta["fitness"]) < donor_fitness and load_of(meta) < donor_load


def plan_redirections(
    metas: Sequence[dict[str, Any]],
    *,
    donor_fitness: float = DONOR_MAX_FITNESS,
    donor_load: float = DONOR_MAX_LOAD,
    receiver_fitness: float = RECEIVER_MIN_FITNESS,
) -> list[Move]:
    """Moves from donors to receivers (see the module docstring); no Redis.

    Donors go lowest fitness first; ties in room go to the smaller receiver id, so a
    plan is deterministic for given metas.
    """
    donors = sorted(
        (m for m in metas if _is_donor(m, donor_fitness, donor_load)),
        key=lambda m: (float(m["fitness"]), _id(m)),
    )
    room = {_id(m): _cap(m) - _size(m) for m in metas if float(m["fitness"]) > receiver_fitness}
    moves: list[Move] = []
    for donor in donors:
        size = _size(donor)
        keep = max(1, int(donor["spec"].get("min_entities", 1)))
        give = min(max(1, size // 2), size - keep)  # half, at least 1, keeping its floor
        if give < 1 or not room:
            continue
        dst = min(room, key=lambda b: (-room[b], b))
        count = min(give, room[dst])
        if count < 1:
            continue  # the roomiest receiver is full, so all are
        room[dst] -= count
        moves.append(Move(_id(donor), dst, count))
    return moves


def plan_merges(
    metas: Sequence[dict[str, Any]],
    *,
    donor_fitness: float = DONOR_MAX_FITNESS,
    donor_load: float = DONOR_MAX_LOAD,
) -> list[Merge]:
    """Pairs of donors of one group that fit in one block; each block in one pair at most.

    Greedy: the smallest unpaired donor takes the largest partner it still fits with.
    """
    by_group: dict[str, list[dict[str, Any]]] = {}
    for meta in metas:
        if _is_donor(meta, donor_fitness, donor_load):
            by_group.setdefault(str(meta["spec"]["group"]), []).append(meta)
    merges: list[Merge] = []
    for group in sorted(by_group):
        pool = sorted(by_group[group], key=lambda m: (_size(m), _id(m)))
        while len(pool) >= 2:
            small = pool.pop(0)
            fits = [m for m in pool if _size(small) + _size(m) <= min(_cap(small), _cap(m))]
            if not fits:
                continue  # every other block is at least as large: none fits later either
            partner = max(fits, key=lambda m: (_size(m), _id(m)))
            pool.remove(partner)
            # The larger keeps its id: fewer entities move.
            merges.append(Merge(keep=_id(partner), absorb=_id(small)))
    return merges


def plan_splits(metas: Sequence[dict[str, Any]]) -> list[Split]:
    """One split for each block above its ``max_entities``, with a fresh ``{id}.{n}``."""
    taken = {_id(m) for m in metas}
    splits: list[Split] = []
    for meta in sorted(metas, key=_id):
        if _size(meta) > _cap(meta) and _size(meta) >= 2:
            new_id = _free_id(_id(meta), taken)
            taken.add(new_id)
            splits.append(Split(_id(meta), new_id))
    return splits


def _free_id(block_id: str, taken: set[str]) -> str:
    n = 1
    while f"{block_id}.{n}" in taken:
        n += 1
    return f"{block_id}.{n}"


# -- applying (compare-and-set) --------------------------------------------------------


def _load(store: BlockStore, block_ids: Sequence[str]) -> list[StoredBlock]:
    try:
        return store.load_many(block_ids)
    except BlockNotFound as exc:
        raise RedirectError(str(exc)) from None


def _cas_retry(
    store: BlockStore,
    what: str,
    attempt: Callable[[], tuple[list[StoredBlock], list[StoredBlock], T]],
) -> T:
    """Run ``attempt`` (read, build the writes) and CAS-write until it wins."""
    for n in range(CAS_ATTEMPTS):
        writes, deletes, result = attempt()
        if store.write(writes, delete=deletes) == 0:
            return result
        time.sleep(random.uniform(0.0, CAS_BACKOFF_S * (n + 1)))
    raise VersionConflict(f"{what}: lost {CAS_ATTEMPTS} compare-and-set races in a row")


def _rechannel(entities: EntityArrays, canal: int) -> EntityArrays:
    entities.channel[:] = canal
    return entities


def _check_fits(stored: StoredBlock, entities: int, doing: str) -> None:
    """Refuse (RedirectError) a step that would take a block past its ``max_size_mb``."""
    spec = stored.block.spec
    if not spec.fits(entities):
        raise RedirectError(
            f"block {spec.id!r} {doing} would hold {entities} entities, "
            f"{state_bytes(entities)} bytes of state, above its max_size_mb "
            f"({spec.max_bytes} bytes, at most {spec.max_fitting()} entities); refused"
        )


def redirect(store: BlockStore, src: str, dst: str, count: int) -> int:
    """Move the last ``count`` entities of ``src`` to the end of ``dst``; return ``count``.

    One CAS over both blocks, retried on a version conflict (VersionConflict after
    :data:`CAS_ATTEMPTS`). Refuses (RedirectError) unknown blocks, ``src == dst``,
    ``count < 1`` and moving all of ``src``. It does not clamp ``count`` to the room
    ``dst`` has: a manual redirection is the operator's call, and the next sync run
    splits a block left above its ``max_entities``.
    """
    if src == dst:
        raise RedirectError(f"cannot redirect block {src!r} to itself")
    if count < 1:
        raise RedirectError(f"count must be >= 1, got {count}")

    def attempt() -> tuple[list[StoredBlock], list[StoredBlock], int]:
        s, d = _load(store, [src, dst])
        n = len(s.block.entities)
        if count >= n:
            raise RedirectError(
                f"block {src!r} has {n} entities; moving {count} would leave it none "
                f"(at most {n - 1})"
            )
        _check_fits(d, len(d.block.entities) + count, f"receiving {count} from {src!r}")
        kept, moved = s.block.entities.split_off(slice(n - count, n))
        s.block.entities = kept
        d.block.entities = EntityArrays.concat(
            [d.block.entities, _rechannel(moved, d.block.spec.canal)]
        )
        return [s, d], [], count

    moved = _cas_retry(store, f"redirect {src} -> {dst}", attempt)
    log.info("[sync] redirected %d entities %s -> %s", moved, src, dst)
    counters.add(store, {"redirections": 1, "redirected_entities": moved})
    return moved


def merge(store: BlockStore, keep: str, absorb: str) -> int:
    """Append every entity of ``absorb`` to ``keep`` and delete ``absorb``, in one CAS.

    Returns how many entities moved. ``keep`` keeps its spec, fitness and last run.
    Any two blocks may merge (the planner only pairs donors of one group).
    """
    if keep == absorb:
        raise RedirectError(f"cannot merge block {keep!r} into itself")

    def attempt() -> tuple[list[StoredBlock], list[StoredBlock], int]:
        k, a = _load(store, [keep, absorb])
        _check_fits(k, len(k.block.entities) + len(a.block.entities), f"absorbing {absorb!r}")
        # Entries its last run recorded may still be unacked; acking recorded entries is
        # always safe, and once its record is gone nothing else would know they ran.
        feed.ack(store.settings, store.r, [a])
        moved = _rechannel(a.block.entities, k.block.spec.canal)
        k.block.entities = EntityArrays.concat([k.block.entities, moved])
        return [k], [a], len(moved)

    moved = _cas_retry(store, f"merge {absorb} into {keep}", attempt)
    log.info("[sync] merged %s into %s (%d entities)", absorb, keep, moved)
    counters.add(store, {"merges": 1})
    return moved


def split(store: BlockStore, block_id: str, new_id: str | None = None) -> str:
    """Move the last half of ``block_id`` into a new block; return the new id.

    The new block has the same spec but its id (``{block_id}.{n}``, smallest free
    ``n``, unless ``new_id`` is given), the parent's fitness, extra and last cycle,
    and no last result: it does not run again in a cycle its entities already ran
    in, nor republish the parent's result. Registered (version 0) in the same CAS.
    """

    def attempt() -> tuple[list[StoredBlock], list[StoredBlock], str]:
        (parent,) = _load(store, [block_id])
        n = len(parent.block.entities)
        if n < 2:
            raise RedirectError(f"block {block_id!r} has {n} entities; nothing to split")
        child_id = new_id or _free_id(block_id, set(store.ids()))
        if new_id is not None and store.r.exists(store.key(new_id)):
            raise RedirectError(f"block {new_id!r} already exists")
        kept, moved = parent.block.entities.split_off(slice(n - n // 2, n))
        parent.block.entities = kept
        spec = replace(parent.block.spec, id=child_id)
        child = StoredBlock(
            SymbioticBlock(spec, moved, fitness=parent.block.fitness),
            version=0,
            last_cycle=parent.last_cycle,
            extra=dict(parent.extra),
            load=parent.load,
        )
        return [parent, child], [], child_id

    child_id = _cas_retry(store, f"split {block_id}", attempt)
    log.info("[sync] split %s -> %s", block_id, child_id)
    counters.add(store, {"splits": 1})
    return child_id


# -- the module ------------------------------------------------------------------------


class SyncModule(Module):
    """``ModuloSincronizacion``: split, merge, then redirect, once per :meth:`run`.

    Several runs at once would each move entities (safely, but twice as many); the
    periodic task running this holds the single-instance lock.
    """

    name = "sync"

    def __init__(
        self,
        store: BlockStore | None = None,
        *,
        donor_fitness: float = DONOR_MAX_FITNESS,
        donor_load: float = DONOR_MAX_LOAD,
        receiver_fitness: float = RECEIVER_MIN_FITNESS,
    ) -> None:
        self.store = store
        self.donor_fitness = donor_fitness
        self.donor_load = donor_load
        self.receiver_fitness = receiver_fitness

    def initialize(self, nucleus: Any) -> None:
        """Use the nucleus's ``store``, else a BlockStore on its ``settings``."""
        super().initialize(nucleus)
        if self.store is None:
            self.store = getattr(nucleus, "store", None) or BlockStore(nucleus.settings)

    def run(self) -> dict[str, Any]:
        """One round: apply splits, merges and redirections; report them and the totals.

        Each phase plans on fresh metas. A step that became impossible meanwhile (a
        block vanished or shrank) is skipped and logged, not fatal.
        """
        store = self._store()
        before = _total(store.metas())
        report: dict[str, Any] = {"moves": [], "merges": [], "splits": [], "skipped": []}
        for sp in plan_splits(store.metas()):
            self._apply(store, report, sp)
        for mg in plan_merges(
            store.metas(), donor_fitness=self.donor_fitness, donor_load=self.donor_load
        ):
            self._apply(store, report, mg)
        for mv in plan_redirections(
            store.metas(),
            donor_fitness=self.donor_fitness,
            donor_load=self.donor_load,
            receiver_fitness=self.receiver_fitness,
        ):
            self._apply(store, report, mv)
        after = _total(store.metas())
        report["entities_before"], report["entities_after"] = before, after
        if report["moves"]:
            self._announce(store, report["moves"])
        if before != after:
            # Sync only moves entities; a difference means something else changed the
            # block set meanwhile (a registration, a manual redirect).
            log.warning("[sync] entity total changed during the run: %d -> %d", before, after)
        log.info(
            "[sync] %d splits, %d merges, %d moves; %d entities",
            len(report["splits"]), len(report["merges"]), len(report["moves"]), after,
        )  # fmt: skip
        return report

    @staticmethod
    def _apply(store: BlockStore, report: dict[str, Any], step: Move | Merge | Split) -> None:
        """Apply one planned step; a step that became impossible is reported as skipped."""
        kind = {Move: "moves", Merge: "merges", Split: "splits"}[type(step)]
        try:
            if isinstance(step, Move):
                redirect(store, step.src, step.dst, step.count)
            elif isinstance(step, Merge):
                merge(store, step.keep, step.absorb)
            else:
                # split() picks the id again: the planned one may have been taken meanwhile.
                step = Split(step.block_id, split(store, step.block_id))
        except (RedirectError, VersionConflict) as exc:
            log.warning("[sync] skipped %s: %s", step, exc)
            report["skipped"].append({"kind": kind, **step.to_dict(), "reason": str(exc)})
            return
        report[kind].append(step.to_dict())

    @staticmethod
    def _announce(store: BlockStore, moves: list[dict[str, Any]]) -> None:
        """Log the seed's line; one info alert per donor on corec_alerts (rate-limited)."""
        moved = sum(int(m["count"]) for m in moves)
        shown = ", ".join(f"{m['src']} -> {m['dst']} ({m['count']})" for m in moves[:10])
        log.info("[Sincronizacion] Entidades redirigidas: %d entities in %d moves: %s",
                 moved, len(moves), shown)  # fmt: skip
        for m in moves:
            message = (f"Entidades redirigidas: {m['count']} entities {m['src']} -> {m['dst']} "
                       f"(idle donor: low fitness and measured load)")  # fmt: skip
            # One per donor and hour (a donor halves every sync run until it is one entity).
            alert(store.settings, store.r, "info", "sync", f"redirect:{m['src']}", message,
                  {"src": m["src"], "dst": m["dst"], "count": m["count"]})  # fmt: skip

    def _store(self) -> BlockStore:
        if self.store is None:
            raise CorecError("SyncModule has no block store: pass one or call initialize()")
        return self.store


def _total(metas: Sequence[dict[str, Any]]) -> int:
    return sum(_size(m) for m in metas)
