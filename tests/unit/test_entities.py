"""Entities as rows: wire format, state format, validation, array operations."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError

from corec_tasks.blocks.entities import (
    WIRE_DTYPE,
    WIRE_FORMAT,
    EntityArrays,
    EntityFormatError,
    EntityRecord,
    validate_wire,
)
from corec_tasks.errors import CorecError


@st.composite
def entity_arrays(draw: st.DrawFn, max_size: int = 200) -> EntityArrays:
    n = draw(st.integers(0, max_size))
    return EntityArrays(
        ids=draw(hnp.arrays(np.uint32, n)),
        channel=draw(hnp.arrays(np.uint8, n, elements=st.integers(1, 255))),
        value=draw(hnp.arrays(np.float32, n, elements=st.floats(width=32, allow_nan=False))),
        active=draw(hnp.arrays(np.bool_, n)),
        failures=draw(hnp.arrays(np.uint8, n)),
    )


def struct_records(ent: EntityArrays, idx: list[int]) -> bytes:
    return b"".join(
        struct.pack(
            WIRE_FORMAT,
            int(ent.ids[i]),
            int(ent.channel[i]),
            float(ent.value[i]),
            bool(ent.active[i]),
        )
        for i in idx
    )


def test_wire_dtype_matches_struct_format() -> None:
    assert WIRE_FORMAT == "!IBf?"
    assert WIRE_DTYPE.itemsize == struct.calcsize(WIRE_FORMAT) == 10
    assert [WIRE_DTYPE[f].str for f in ("id", "canal", "valor", "activo")] == [
        ">u4", "|u1", ">f4", "|b1",
    ]  # fmt: skip


def test_unsigned_channel_is_why_the_format_differs_from_the_seed() -> None:
    # The seed's signed "b" cannot carry channel 200; ours can, and agrees below 128.
    with pytest.raises(struct.error):
        struct.pack("!Ibf?", 1, 200, 0.5, True)
    ent = EntityArrays.fresh([1], 200)
    assert ent.pack_wire() == struct.pack(WIRE_FORMAT, 1, 200, 0.0, True)
    assert struct.pack("!Ibf?", 1, 5, 0.5, True) == struct.pack(WIRE_FORMAT, 1, 5, 0.5, True)


@settings(max_examples=60, deadline=None)
@given(ent=entity_arrays(), data=st.data())
def test_pack_wire_equals_struct_pack_per_record(ent: EntityArrays, data: st.DataObject) -> None:
    assert ent.pack_wire() == struct_records(ent, list(range(len(ent))))
    idx = data.draw(st.lists(st.integers(0, max(len(ent) - 1, 0)), max_size=len(ent)))
    if len(ent):
        assert ent.pack_wire(np.array(idx, dtype=np.intp)) == struct_records(ent, idx)
        assert ent.pack_wire(slice(1, 3)) == struct_records(ent, list(range(len(ent)))[1:3])


@settings(max_examples=60, deadline=None)
@given(ent=entity_arrays())
def test_unpack_wire_roundtrip(ent: EntityArrays) -> None:
    back = EntityArrays.unpack_wire(ent.pack_wire())
    expected = EntityArrays(
        ent.ids, ent.channel, ent.value, ent.active, np.zeros(len(ent), np.uint8)
    )
    assert back.equals(expected)
    assert back.ids.dtype == np.uint32 and back.value.dtype == np.float32
    if np.isfinite(ent.value).all():
        assert validate_wire(ent.pack_wire()).equals(expected)


@settings(max_examples=60, deadline=None)
@given(ent=entity_arrays())
def test_state_roundtrip_keeps_failures(ent: EntityArrays) -> None:
    data = ent.to_state()
    assert len(data) == 8 + 11 * len(ent)
    back = EntityArrays.from_state(data)
    assert back.equals(ent)
    assert [a.dtype for a in back._arrays()] == [a.dtype for a in ent._arrays()]
    if len(back):
        back.value[0] = 0.25  # writable, and independent of the bytes it came from
        back.failures[0] = 7
        assert EntityArrays.from_state(data).equals(ent)


def test_from_state_rejects_garbage() -> None:
    good = EntityArrays.fresh([1, 2, 3], 1).to_state()
    for bad, words in [
        (b"xx", "too short"),
        (b"ZZ" + good[2:], "not entity state"),
        (good[:-1], "must be 41 bytes"),
    ]:
        with pytest.raises(EntityFormatError, match=words):
            EntityArrays.from_state(bad)


def test_unpack_wire_rejects_partial_records() -> None:
    data = EntityArrays.fresh([1, 2], 1).pack_wire() + b"\x00\x01\x02"
    with pytest.raises(EntityFormatError, match=r"23 bytes .* 10-byte records \(3 bytes left"):
        EntityArrays.unpack_wire(data)
    assert issubclass(EntityFormatError, CorecError)


def wire(records: list[tuple[int, int, float, int]]) -> bytes:
    return b"".join(struct.pack("!IBfB", *r) for r in records)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([(1, 1, 0.5, 1), (2, 1, 0.5, 1), (3, 0, 0.5, 1)], r"record 2 \(byte offset 20\): canal 0"),
        ([(1, 1, 0.5, 1), (2, 1, float("nan"), 1), (3, 0, 0.5, 1)], "record 1 .*valor nan"),
        ([(1, 1, float("inf"), 1)], "record 0 .*valor inf is not finite"),
        ([(1, 1, 0.5, 1), (2, 1, 0.5, 2)], "record 1 .*activo 2 is not a bool"),
        ([(1, 0, float("nan"), 1)], "record 0 .*canal 0"),  # same record: first field
    ],
)
def test_validate_wire_names_first_bad_record_and_field(
    records: list[tuple[int, int, float, int]], message: str
) -> None:
    with pytest.raises(EntityFormatError, match=message):
        validate_wire(wire(records))


def test_entity_record_validates_single_records() -> None:
    rec = EntityRecord(id=2**32 - 1, canal=255, valor=0.5, activo=True)
    assert rec.pack() == struct.pack(WIRE_FORMAT, 2**32 - 1, 255, 0.5, True)
    assert EntityRecord.unpack(rec.pack()) == rec
    for bad in [
        {"id": -1, "canal": 1, "valor": 0.0, "activo": True},
        {"id": 2**32, "canal": 1, "valor": 0.0, "activo": True},
        {"id": 1, "canal": 0, "valor": 0.0, "activo": True},
        {"id": 1, "canal": 256, "valor": 0.0, "activo": True},
        {"id": 1, "canal": 1, "valor": float("nan"), "activo": True},
        {"id": 1, "canal": 1, "valor": float("inf"), "activo": True},
    ]:
        with pytest.raises(ValidationError):
            EntityRecord(**bad)
    with pytest.raises(EntityFormatError, match="10 bytes"):
        EntityRecord.unpack(b"\x00" * 9)


def test_fresh_take_split_concat() -> None:
    ent = EntityArrays.fresh(np.arange(10, 20), 3)
    assert len(ent) == 10 and ent.nbytes == 110
    assert ent.channel.tolist() == [3] * 10 and ent.active.all()
    assert not ent.value.any() and not ent.failures.any()
    ent.value[:] = np.arange(10) / 10
    kept, removed = ent.split_off(np.array([7, 2, 5]))
    assert kept.ids.tolist() == [10, 11, 13, 14, 16, 18, 19]
    assert removed.ids.tolist() == [12, 15, 17]  # original order kept
    assert removed.value.tolist() == pytest.approx([0.2, 0.5, 0.7])
    removed.value[0] = 9.0  # copies, not views
    assert ent.value[2] == pytest.approx(0.2)
    joined = EntityArrays.concat([kept, removed])
    assert sorted(joined.ids.tolist()) == list(range(10, 20))
    assert len(EntityArrays.concat([])) == 0
    assert ent.take(slice(0, 2)).ids.tolist() == [10, 11]


def test_arrays_must_be_equally_long() -> None:
    with pytest.raises(EntityFormatError, match="equally long"):
        EntityArrays(np.arange(3), np.ones(2), np.zeros(3), np.ones(3), np.zeros(3))
    ent = EntityArrays([1], [1], [0.5], [True], [0])  # lists are coerced to the dtypes
    assert ent.ids.dtype == np.uint32 and ent.failures.dtype == np.uint8
