"""Block state in Redis: one versioned record per block, written compare-and-set.

Any worker on any node can run any block because the block lives in Redis, not in
a process. Each record is a hash ``corec:block:<id>`` with fields

* ``v``    version, incremented by every write;
* ``ent``  the entities (``EntityArrays.to_state()``);
* ``meta`` JSON: the spec, fitness, last cycle run and its result summary;
* ``msg``  the last run's compressed messages, so a redelivered run republishes
  exactly what it first published instead of running twice;
* ``model`` (optional) a smart block's pickled model.

Every write goes through one Lua script that checks the expected version of each
key it touches and writes all of them or none, so a block run racing a
redirection (which touches two blocks at once) never loses or duplicates an
entity: the loser re-reads and retries.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from corec_tasks.blocks.entities import EntityArrays
from corec_tasks.blocks.model import BlockSpec, BlockTooLarge, SymbioticBlock
from corec_tasks.errors import CorecError
from corec_tasks.redis_conn import redis_client
from corec_tasks.settings import Settings

# KEYS: the index, its sequence, then the block keys.
# ARGV: per block 5 values: expected version ("0" = must not exist), ent, meta, id, msg.
# An empty ``ent`` deletes the block (a merge); version "0" registers it (a split).
_CAS = """
local index, seq = KEYS[1], KEYS[2]
local n = #KEYS - 2
for i = 1, n do
  local v = redis.call('HGET', KEYS[i + 2], 'v') or '0'
  if v ~= ARGV[(i - 1) * 5 + 1] then return i end
end
for i = 1, n do
  local b = (i - 1) * 5
  local key, id = KEYS[i + 2], ARGV[b + 4]
  if ARGV[b + 2] == '' then
    redis.call('DEL', key)
    redis.call('ZREM', index, id)
  else
    redis.call('HSET', key, 'v', tonumber(ARGV[b + 1]) + 1, 'ent', ARGV[b + 2],
               'meta', ARGV[b + 3])
    if ARGV[b + 1] == '0' then
      redis.call('ZADD', index, 'NX', redis.call('INCR', seq), id)
    end
  end
end
return 0
"""


def feed_group(group: str) -> str:
    """The consumer group through which a stream-fed block group reads its stream."""
    return f"corec_block:{group}"


def ensure_feed_group(settings: Settings, client: redis.Redis, stream: str, group: str) -> None:
    """Create ``group`` on ``stream`` at its end (``$``): a block is fed what arrives
    after it is registered, not the stream's history. Idempotent."""
    try:
        client.xgroup_create(settings.key(stream), group, id="$", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class BlockNotFound(CorecError):
    """No block with that id is registered."""


class VersionConflict(CorecError):
    """A compare-and-set write lost a race; re-read and retry."""


@dataclass
class StoredBlock:
    """A block as read from Redis, with the version it was read at."""

    block: SymbioticBlock
    version: int
    last_cycle: int = -1
    last_result: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    last_messages: bytes = b""
    #: Measured load (EWMA of each run's share of entities that had input and ran);
    #: None until the block first runs.
    load: float | None = None
    #: A stream-fed block's ``cursor`` (next entity of its round-robin) and the
    #: ``entries`` its last run consumed (acked after this record is written, and
    #: acked again by any later step, so none is ever processed twice).
    feed: dict[str, Any] = field(default_factory=dict)
    #: Its own history for the audit: EWMA mean and variance of fitness, run count.
    hist: dict[str, Any] = field(default_factory=dict)


def _spec_from(meta: dict[str, Any]) -> BlockSpec:
    return BlockSpec.from_dict(meta["spec"])


class BlockStore:
    """Versioned block records in Redis (keys under the settings' prefix)."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.r = client or redis_client(settings)
        self._cas = self.r.register_script(_CAS)
        self.index_key = settings.key("corec:blocks")
        self.seq_key = settings.key("corec:blocks:seq")

    def key(self, block_id: str) -> str:
        return self.settings.key(f"corec:block:{block_id}")

    # -- reading -----------------------------------------------------------------

    def ids(self) -> list[str]:
        """Registered block ids, in registration order."""
        return [b.decode() if isinstance(b, bytes) else str(b)
                for b in self.r.zrange(self.index_key, 0, -1)]  # fmt: skip

    def count(self) -> int:
        return int(self.r.zcard(self.index_key))

    def load_many(
        self, block_ids: Sequence[str], *, model: bool = False, missing_ok: bool = False
    ) -> list[StoredBlock]:
        """Read several blocks in one round trip; a missing one raises BlockNotFound,
        or is left out with ``missing_ok`` (a block merged away since dispatch)."""
        pipe = self.r.pipeline(transaction=False)
        fields = ["v", "ent", "meta", "msg", "model"] if model else ["v", "ent", "meta", "msg"]
        for block_id in block_ids:
            pipe.hmget(self.key(block_id), fields)
        out = []
        for block_id, row in zip(block_ids, pipe.execute(), strict=True):
            if row[0] is None:
                if missing_ok:
                    continue
                raise BlockNotFound(f"block {block_id!r} is not registered")
            meta = json.loads(row[2])
            state = pickle.loads(row[4]) if model and row[4] else None
            block = SymbioticBlock(
                _spec_from(meta), EntityArrays.from_state(row[1]),
                fitness=float(meta.get("fitness", 1.0)), state=state,
            )  # fmt: skip
            out.append(StoredBlock(block, int(row[0]), int(meta.get("last_cycle", -1)),
                                   meta.get("last_result"), meta.get("extra", {}),
                                   row[3] or b"", meta.get("load"), meta.get("feed", {}),
                                   meta.get("hist", {})))  # fmt: skip
        return out

    def load(self, block_id: str, *, model: bool = False) -> StoredBlock:
        return self.load_many([block_id], model=model)[0]

    def metas(self, block_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Metadata of blocks (no entity arrays): for status, sync and audit."""
        block_ids = self.ids() if block_ids is None else block_ids
        pipe = self.r.pipeline(transaction=False)
        for block_id in block_ids:
            pipe.hmget(self.key(block_id), ["v", "meta"])
        out = []
        for row in pipe.execute():
            if row[0] is None:
                continue
            meta = json.loads(row[1])
            meta["version"] = int(row[0])
            out.append(meta)
        return out

    # -- writing -----------------------------------------------------------------

    @staticmethod
    def _meta(stored: StoredBlock) -> bytes:
        b = stored.block
        meta: dict[str, Any] = {
            "spec": b.spec.to_dict(),
            "fitness": float(b.fitness),
            "num_entidades": len(b.entities),
            "last_cycle": stored.last_cycle,
            "last_result": stored.last_result,
            "extra": stored.extra,
        }
        if stored.load is not None:
            meta["load"] = stored.load
        if stored.feed:
            meta["feed"] = stored.feed
        if stored.hist:
            meta["hist"] = stored.hist
        return json.dumps(meta, separators=(",", ":")).encode()

    def write(self, blocks: Sequence[StoredBlock], *, delete: Sequence[StoredBlock] = ()) -> int:
        """Write ``blocks`` and delete ``delete`` atomically if none changed since read.

        Returns 0 on success, else the 1-based position of the first block whose
        version moved; then nothing was written. A StoredBlock with version 0 is new.
        """
        return int(self._queue(self.r, blocks, delete))

    def _queue(
        self, client: Any, blocks: Sequence[StoredBlock], delete: Sequence[StoredBlock] = ()
    ) -> Any:
        """Run (or, on a pipeline, queue) the compare-and-set script."""
        keys = [self.index_key, self.seq_key]
        args: list[Any] = []
        for stored in blocks:
            keys.append(self.key(stored.block.spec.id))
            args += [str(stored.version), stored.block.entities.to_state(), self._meta(stored),
                     stored.block.spec.id, stored.last_messages]  # fmt: skip
        for stored in delete:
            keys.append(self.key(stored.block.spec.id))
            args += [str(stored.version), b"", b"", stored.block.spec.id, b""]
        return self._cas(keys=keys, args=args, client=client)

    def write_many_pipelined(self, blocks: Sequence[StoredBlock]) -> list[bool]:
        """One CAS per block, in one round trip; True where the write won."""
        pipe = self.r.pipeline(transaction=False)
        for stored in blocks:
            self._queue(pipe, [stored])
        return [int(rc) == 0 for rc in pipe.execute()]

    def save_model(self, block_id: str, model: Any) -> None:
        """Store a smart block's model (outside the CAS: it does not move entities)."""
        self.r.hset(self.key(block_id), "model", pickle.dumps(model, protocol=5))

    def create(
        self,
        specs_ids: Iterable[tuple[BlockSpec, Any]],
        *,
        extras: Mapping[str, dict[str, Any]] | None = None,
        chunk: int = 500,
    ) -> int:
        """Register blocks that do not exist yet (idempotent); returns how many were new.

        ``extras`` maps a block group to metadata kept with each of its blocks
        (its cycle interval, whether a plugin owns it).
        """
        created = 0
        batch: list[StoredBlock] = []

        def flush() -> int:
            pipe = self.r.pipeline(transaction=False)
            for stored in batch:
                self._queue(pipe, [stored])
            new = sum(1 for rc in pipe.execute() if int(rc) == 0)
            batch.clear()
            return new

        groups: set[tuple[str, str]] = set()
        for spec, ids in specs_ids:
            entities = EntityArrays.fresh(ids, spec.canal)
            if not spec.fits(len(entities)):
                raise BlockTooLarge(spec.id, len(entities), spec.max_bytes)
            if spec.stream:
                groups.add((spec.stream, feed_group(spec.group)))
            extra = dict((extras or {}).get(spec.group, {}))
            batch.append(StoredBlock(SymbioticBlock(spec, entities), version=0, extra=extra))
            if len(batch) >= chunk:
                created += flush()
        if batch:
            created += flush()
        for stream, group in sorted(groups):
            ensure_feed_group(self.settings, self.r, stream, group)
        return created

    def clear(self) -> None:
        """Forget every block (tests and `corec blocks reset`)."""
        for block_id in self.ids():
            self.r.delete(self.key(block_id))
        self.r.delete(self.index_key, self.seq_key)
