"""Which days the settlement may write at a given ``now``: pure date arithmetic, with the
instants either side of midnight and of the grace that follows it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.capital_pool.settlement import GRACE, is_over, last_over

DAY = date(2026, 12, 7)
MIDNIGHT = datetime(2026, 12, 8, tzinfo=UTC)  # the end of DAY
TICK = timedelta(milliseconds=100)


@pytest.mark.parametrize(
    ("now", "over", "last"),
    [
        (MIDNIGHT - TICK, False, DAY - timedelta(days=1)),  # 23:59:59.9 on DAY
        (MIDNIGHT + TICK, False, DAY - timedelta(days=1)),  # 00:00:00.1: within the grace
        (MIDNIGHT + GRACE - TICK, False, DAY - timedelta(days=1)),
        (MIDNIGHT + GRACE, True, DAY),  # 00:05:00 exactly: DAY may be settled
        (MIDNIGHT + timedelta(hours=23), True, DAY),
    ],
)
def test_a_day_is_over_grace_after_midnight(now: datetime, over: bool, last: date) -> None:
    assert is_over(DAY, now) is over
    assert last_over(now) == last
    assert not is_over(DAY + timedelta(days=1), now)  # the day after: never yet


def test_now_in_another_zone_is_the_same_instant() -> None:
    """00:03 in Madrid (UTC+1) is 23:03 UTC the day before: DAY is not even over."""
    madrid = (MIDNIGHT + timedelta(minutes=3)).astimezone(timezone(timedelta(hours=1)))
    assert madrid.date() == DAY + timedelta(days=1)
    late = MIDNIGHT - timedelta(minutes=57)
    assert is_over(DAY, late.astimezone(timezone(timedelta(hours=1)))) is False
    assert last_over(late.astimezone(timezone(timedelta(hours=-8)))) == last_over(late)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="time-zone aware"):
        is_over(DAY, datetime(2026, 12, 8, 1))
    with pytest.raises(ValueError, match="time-zone aware"):
        last_over(datetime(2026, 12, 8, 1))


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                    timezones=st.just(UTC)))  # fmt: skip
def test_the_last_day_over_is_over_and_the_next_is_not(now: datetime) -> None:
    """``settle_missing``'s range and ``settle_day``'s check agree at every instant."""
    last = last_over(now)
    assert is_over(last, now) and not is_over(last + timedelta(days=1), now)
