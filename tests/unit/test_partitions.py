"""Partition naming and month arithmetic: pure logic, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import pytest

from corec_tasks.errors import StorageError
from corec_tasks.storage import partitions
from corec_tasks.storage.partitions import month_bounds, months_from, partition_name


def test_month_bounds_are_utc_month_starts() -> None:
    lo, hi = month_bounds(2024, 1)
    assert lo == datetime(2024, 1, 1, tzinfo=UTC).timestamp() == 1_704_067_200.0
    assert hi == datetime(2024, 2, 1, tzinfo=UTC).timestamp()
    assert isinstance(lo, float) and lo.is_integer()


def test_month_bounds_leap_february_and_december_rollover() -> None:
    lo, hi = month_bounds(2024, 2)
    assert hi - lo == 29 * 86_400
    lo, hi = month_bounds(2023, 2)
    assert hi - lo == 28 * 86_400
    lo, hi = month_bounds(2025, 12)
    assert (lo, hi) == (
        datetime(2025, 12, 1, tzinfo=UTC).timestamp(),
        datetime(2026, 1, 1, tzinfo=UTC).timestamp(),
    )


def test_consecutive_months_tile_without_gaps() -> None:
    months = months_from(datetime(2024, 11, 5), 26)
    bounds = [month_bounds(y, m) for y, m in months]
    for (_, hi), (lo, _) in pairwise(bounds):
        assert hi == lo


def test_partition_name_is_zero_padded() -> None:
    assert partition_name("bloques", 2025, 4) == "bloques_2025_04"
    assert partition_name("eventos", 987, 12) == "eventos_0987_12"


def test_months_from_rolls_over_december() -> None:
    assert months_from(datetime(2025, 11, 30, tzinfo=UTC), 3) == [
        (2025, 11),
        (2025, 12),
        (2026, 1),
        (2026, 2),
    ]
    assert months_from(datetime(2025, 12, 31, 23, 59, tzinfo=UTC), 0) == [(2025, 12)]


def test_months_from_uses_the_utc_month() -> None:
    # 00:30 on 1 Jan in UTC+2 is still 31 Dec in UTC.
    local = datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert months_from(local, 1) == [(2025, 12), (2026, 1)]
    # A naive datetime is taken as UTC.
    assert months_from(datetime(2026, 1, 1, 0, 30), 0) == [(2026, 1)]


def test_months_from_rejects_negative() -> None:
    with pytest.raises(ValueError):
        months_from(datetime(2025, 1, 1), -1)


def test_create_partition_sql_has_exact_bounds() -> None:
    sql = partitions.create_partition_sql("eventos", 2024, 12)
    assert sql == (
        'CREATE TABLE "eventos_2024_12" PARTITION OF "eventos" '
        "FOR VALUES FROM ('1733011200.0') TO ('1735689600.0')"
    )


def test_table_names_are_checked_before_reaching_sql() -> None:
    with pytest.raises(StorageError):
        partitions.create_partition_sql('eventos"; DROP TABLE x; --', 2024, 1)


@pytest.mark.parametrize(
    ("bound", "expected"),
    [
        ("FOR VALUES FROM ('1733011200') TO ('1735689600')", (1_733_011_200.0, 1_735_689_600.0)),
        ("FOR VALUES FROM (MINVALUE) TO ('10')", (None, 10.0)),
        ("DEFAULT", (None, None)),
    ],
)
def test_partition_bounds_are_parsed(bound: str, expected: tuple[float | None, ...]) -> None:
    assert partitions._parse_bound(bound) == expected
