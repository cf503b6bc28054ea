"""Entities as rows: a block holds its entities as five parallel numpy arrays.

An entity is ``id uint32, canal uint8, valor float32, activo bool`` (seed 004 §2.1)
plus a ``failures`` counter for self-repair: 11 bytes, against ~1 KB for the seed's
object per entity. The entity's *function* is not stored per row; it is the block's
processor (see :mod:`corec_tasks.blocks.processors`).

Two byte formats:

* the **wire** format, :data:`WIRE_FORMAT` (10 bytes a record, no failures), what
  blocks publish and what other nodes read;
* the **state** format, :meth:`EntityArrays.to_state` (11 bytes an entity plus an
  8-byte header, failures included), what a block is stored as in Redis.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from corec_tasks.errors import CorecError

#: One wire record: ``id, canal, valor, activo``, network byte order, unpadded.
#: The seed writes ``"!Ibf?"``, but its ``b`` is a *signed* byte (-128..127) while
#: channels go 1..255, so channel 200 would not pack; ``B`` (uint8) is the same
#: byte for channels 1..127 and also carries 128..255.
WIRE_FORMAT = "!IBf?"
WIRE_RECORD_SIZE = struct.calcsize(WIRE_FORMAT)  # 10

#: The same record as a numpy structured dtype (big-endian, unaligned), so a whole
#: block packs with one ``tobytes()`` instead of a ``struct.pack`` per entity.
WIRE_DTYPE = np.dtype([("id", ">u4"), ("canal", "u1"), ("valor", ">f4"), ("activo", "?")])
assert WIRE_DTYPE.itemsize == WIRE_RECORD_SIZE

# Reading untrusted bytes as ``?`` would accept any byte as a bool; read it raw and
# check it is 0 or 1.
_WIRE_RAW = np.dtype([("id", ">u4"), ("canal", "u1"), ("valor", ">f4"), ("activo", "u1")])

# State format: magic, version, one pad byte, count (little-endian uint32), then
# ids and values (4-byte arrays first so they stay aligned), channel, active, failures.
_STATE_MAGIC = b"CE"
_STATE_VERSION = 1
_STATE_HEADER = struct.Struct("<2sBxI")

U32 = npt.NDArray[np.uint32]
U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
Bool = npt.NDArray[np.bool_]
#: Positions into an EntityArrays: integer indices, a boolean mask or a slice.
Index = npt.NDArray[np.intp] | npt.NDArray[np.bool_] | slice


class EntityFormatError(CorecError):
    """Entity bytes or arrays are malformed; the message names the record and field."""


@dataclass(slots=True, eq=False)
class EntityArrays:
    """A block's entities: one row per entity across five arrays of equal length."""

    ids: U32
    channel: U8
    value: F32
    active: Bool
    failures: U8

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.uint32)
        self.channel = np.asarray(self.channel, dtype=np.uint8)
        self.value = np.asarray(self.value, dtype=np.float32)
        self.active = np.asarray(self.active, dtype=np.bool_)
        self.failures = np.asarray(self.failures, dtype=np.uint8)
        n = self.ids.shape
        arrays = (self.channel, self.value, self.active, self.failures)
        if len(n) != 1 or any(a.shape != n for a in arrays):
            shapes = [a.shape for a in (self.ids, *arrays)]
            raise EntityFormatError(f"entity arrays must be 1-D and equally long, got {shapes}")

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def fresh(cls, ids: npt.ArrayLike, channel: int) -> EntityArrays:
        """New entities: value 0, active, no failures."""
        ids_arr = np.array(ids, dtype=np.uint32)
        n = ids_arr.shape[0]
        return cls(
            ids_arr,
            np.full(n, channel, dtype=np.uint8),
            np.zeros(n, dtype=np.float32),
            np.ones(n, dtype=np.bool_),
            np.zeros(n, dtype=np.uint8),
        )

    @classmethod
    def empty(cls) -> EntityArrays:
        """No entities."""
        return cls.fresh(np.empty(0, dtype=np.uint32), 1)

    def take(self, idx: Index) -> EntityArrays:
        """A copy of the entities at ``idx``."""
        return EntityArrays(
            self.ids[idx].copy(),
            self.channel[idx].copy(),
            self.value[idx].copy(),
            self.active[idx].copy(),
            self.failures[idx].copy(),
        )

    def split_off(self, idx: Index) -> tuple[EntityArrays, EntityArrays]:
        """``(kept, removed)``: the entities at ``idx`` move to ``removed``, order kept."""
        mask = np.zeros(len(self), dtype=np.bool_)
        mask[idx] = True
        return self.take(~mask), self.take(mask)

    @classmethod
    def concat(cls, parts: Sequence[EntityArrays]) -> EntityArrays:
        """All ``parts`` one after the other."""
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.channel for p in parts]),
            np.concatenate([p.value for p in parts]),
            np.concatenate([p.active for p in parts]),
            np.concatenate([p.failures for p in parts]),
        )

    def equals(self, other: EntityArrays) -> bool:
        """Same rows in the same order (dataclass ``==`` is off: arrays have no truth value)."""
        return all(
            np.array_equal(a, b) for a, b in zip(self._arrays(), other._arrays(), strict=True)
        )

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.ids, self.channel, self.value, self.active, self.failures)

    @property
    def nbytes(self) -> int:
        """Bytes held by the five arrays (11 per entity)."""
        return sum(a.nbytes for a in self._arrays())

    # -- wire format -----------------------------------------------------------------

    def pack_wire(self, idx: Index | None = None) -> bytes:
        """Wire records of the entities at ``idx`` (all when None), 10 bytes each."""
        sel = slice(None) if idx is None else idx
        ids = self.ids[sel]
        out = np.empty(ids.shape[0], dtype=WIRE_DTYPE)
        out["id"] = ids
        out["canal"] = self.channel[sel]
        out["valor"] = self.value[sel]
        out["activo"] = self.active[sel]
        return out.tobytes()

    @classmethod
    def unpack_wire(cls, data: bytes | bytearray | memoryview) -> EntityArrays:
        """Entities from wire records (failures 0); no checks beyond the length."""
        raw = _wire_records(data)
        return cls(
            raw["id"].astype(np.uint32),
            raw["canal"].copy(),
            raw["valor"].astype(np.float32),
            raw["activo"] != 0,
            np.zeros(raw.shape[0], dtype=np.uint8),
        )

    # -- state format ----------------------------------------------------------------

    def to_state(self) -> bytes:
        """Compact bytes of every field including failures, for storage."""
        n = len(self)
        return b"".join(
            (
                _STATE_HEADER.pack(_STATE_MAGIC, _STATE_VERSION, n),
                self.ids.astype("<u4", copy=False).tobytes(),
                self.value.astype("<f4", copy=False).tobytes(),
                self.channel.tobytes(),
                self.active.tobytes(),
                self.failures.tobytes(),
            )
        )

    @classmethod
    def from_state(cls, data: bytes | bytearray | memoryview) -> EntityArrays:
        """Inverse of :meth:`to_state`; the arrays share one writable buffer."""
        if len(data) < _STATE_HEADER.size:
            raise EntityFormatError(f"entity state too short ({len(data)} bytes)")
        magic, version, n = _STATE_HEADER.unpack_from(data)
        if magic != _STATE_MAGIC or version != _STATE_VERSION:
            raise EntityFormatError(f"not entity state (magic {magic!r}, version {version})")
        expected = _STATE_HEADER.size + 11 * n
        if len(data) != expected:
            raise EntityFormatError(
                f"entity state of {n} entities must be {expected} bytes, got {len(data)}"
            )
        # One copy into a writable buffer; every array is a view into it.
        buf = bytearray(data)
        off = _STATE_HEADER.size

        def view(dtype: str, size: int) -> np.ndarray:
            nonlocal off
            arr = np.frombuffer(buf, dtype=dtype, count=n, offset=off)
            off += size * n
            return arr

        ids = view("<u4", 4).astype(np.uint32, copy=False)
        value = view("<f4", 4).astype(np.float32, copy=False)
        channel = view("u1", 1)
        active = view("?", 1)
        failures = view("u1", 1)
        return cls(ids, channel, value, active, failures)


def _wire_records(data: bytes | bytearray | memoryview) -> np.ndarray:
    if len(data) % WIRE_RECORD_SIZE:
        raise EntityFormatError(
            f"wire data of {len(data)} bytes is not a whole number of "
            f"{WIRE_RECORD_SIZE}-byte records ({len(data) % WIRE_RECORD_SIZE} bytes left over)"
        )
    return np.frombuffer(data, dtype=_WIRE_RAW)


class EntityRecord(BaseModel):
    """One wire record, validated; for single records at the edge (API, CLI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int = Field(ge=0, le=2**32 - 1)
    canal: int = Field(ge=1, le=255)
    valor: float = Field(allow_inf_nan=False)
    activo: bool

    def pack(self) -> bytes:
        """The record's 10 wire bytes."""
        return struct.pack(WIRE_FORMAT, self.id, self.canal, self.valor, self.activo)

    @classmethod
    def unpack(cls, data: bytes) -> EntityRecord:
        """Validate one 10-byte record."""
        if len(data) != WIRE_RECORD_SIZE:
            raise EntityFormatError(f"a wire record is {WIRE_RECORD_SIZE} bytes, got {len(data)}")
        ident, canal, valor, activo = struct.unpack(WIRE_FORMAT, data)
        return cls(id=ident, canal=canal, valor=valor, activo=activo)


def validate_wire(data: bytes | bytearray | memoryview) -> EntityArrays:
    """Unpack wire records, rejecting channel 0, non-finite values and non-0/1 bools.

    The check is vectorised; the error names the first bad record and its field.
    """
    raw = _wire_records(data)
    checks: list[tuple[str, npt.NDArray[np.bool_], Any]] = [
        ("canal", raw["canal"] == 0, "is 0; channels are 1..255"),
        ("valor", ~np.isfinite(raw["valor"]), "is not finite"),
        ("activo", raw["activo"] > 1, "is not a bool byte (0 or 1)"),
    ]
    first: tuple[int, str, str] | None = None
    for field, bad, why in checks:
        hits = np.flatnonzero(bad)
        if hits.size and (first is None or hits[0] < first[0]):
            first = (int(hits[0]), field, why)
    if first is not None:
        index, field, why = first
        shown = raw[field][index]
        shown_text = str(float(shown)) if field == "valor" else str(int(shown))
        raise EntityFormatError(
            f"wire record {index} (byte offset {index * WIRE_RECORD_SIZE}): "
            f"{field} {shown_text} {why}"
        )
    return EntityArrays.unpack_wire(data)
