"""Fire times of a schedule in its time zone: DST in two zones, month ends, leap days."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import islice

import pytest

from engine.scheduling.cron import Interval, Schedule


def local(schedule: Schedule, start: str, count: int) -> list[str]:
    fires = islice(schedule.fires_after(datetime.fromisoformat(start)), count)
    return [f.astimezone(schedule.zone).strftime("%Y-%m-%d %H:%M %Z") for f in fires]


def test_a_skipped_local_time_fires_when_the_clocks_jump_berlin() -> None:
    daily = Schedule("30 2 * * *", "Europe/Berlin")  # 2026-03-29 02:00 -> 03:00
    assert local(daily, "2026-03-27T00:00:00+00:00", 4) == [
        "2026-03-27 02:30 CET",
        "2026-03-28 02:30 CET",
        "2026-03-29 03:00 CEST",  # 02:30 does not exist that day: not skipped, not doubled
        "2026-03-30 02:30 CEST",
    ]


def test_a_repeated_local_time_fires_once_berlin() -> None:
    daily = Schedule("30 1 * * *", "Europe/Berlin")  # 2026-10-25 03:00 -> 02:00
    hourly = Schedule("0 * * * *", "Europe/Berlin")
    assert local(daily, "2026-10-23T00:00:00+00:00", 3) == [
        "2026-10-24 01:30 CEST",
        "2026-10-25 01:30 CEST",
        "2026-10-26 01:30 CET",
    ]
    # 02:00 happens twice that night; it is one wall time, so one run
    assert local(hourly, "2026-10-24T22:30:00+00:00", 4) == [
        "2026-10-25 01:00 CEST",
        "2026-10-25 02:00 CEST",
        "2026-10-25 03:00 CET",
        "2026-10-25 04:00 CET",
    ]


def test_new_york_spring_forward_and_fall_back() -> None:
    every_half_hour = Schedule("*/30 * * * *", "America/New_York")  # 2026-03-08 02:00 -> 03:00
    assert local(every_half_hour, "2026-03-08T06:00:00+00:00", 4) == [
        "2026-03-08 01:30 EST",
        "2026-03-08 03:00 EDT",  # 02:00 and 02:30 do not exist: one run when the clocks jump
        "2026-03-08 03:30 EDT",
        "2026-03-08 04:00 EDT",
    ]
    daily = Schedule("15 1 * * *", "America/New_York")  # 2026-11-01 02:00 -> 01:00
    fires = list(islice(daily.fires_after(datetime(2026, 10, 31, tzinfo=UTC)), 3))
    assert [f.isoformat() for f in fires] == [
        "2026-10-31T05:15:00+00:00",
        "2026-11-01T05:15:00+00:00",  # 01:15 EDT, the first of the two 01:15s
        "2026-11-02T06:15:00+00:00",
    ]


def test_month_ends_and_leap_days() -> None:
    assert local(Schedule("0 0 31 * *"), "2026-01-01T00:00:00+00:00", 3) == [
        "2026-01-31 00:00 UTC",
        "2026-03-31 00:00 UTC",
        "2026-05-31 00:00 UTC",
    ]
    assert local(Schedule("0 6 29 2 *", "Europe/Berlin"), "2026-01-01T00:00:00+00:00", 2) == [
        "2028-02-29 06:00 CET",
        "2032-02-29 06:00 CET",
    ]
    assert local(Schedule("0 0 L * *"), "2028-01-15T00:00:00+00:00", 2) == [
        "2028-01-31 00:00 UTC",
        "2028-02-29 00:00 UTC",
    ]


def test_seconds_as_a_sixth_field() -> None:
    every_ten = Schedule("* * * * * */10")
    assert local(every_ten, "2026-01-01T00:00:01+00:00", 2) == [
        "2026-01-01 00:00 UTC",
        "2026-01-01 00:00 UTC",
    ]
    fires = list(islice(every_ten.fires_after(datetime(2026, 1, 1, tzinfo=UTC)), 2))
    assert [f.second for f in fires] == [10, 20]


def test_intervals_and_due_fires() -> None:
    daily = Schedule("0 2 * * *", "Europe/Berlin")
    fire = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 02:00 local is skipped: fires at the jump
    assert daily.next_after(datetime(2026, 3, 28, 12, tzinfo=UTC)) == datetime(
        2026, 3, 29, 1, 0, tzinfo=UTC
    )
    assert daily.interval_ending(datetime(2026, 3, 29, 1, 0, tzinfo=UTC)) == Interval(
        datetime(2026, 3, 28, 1, 0, tzinfo=UTC), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    )
    assert daily.previous(fire) == datetime(2026, 3, 28, 1, 0, tzinfo=UTC)
    due = daily.due(
        datetime(2026, 3, 27, 1, 0, tzinfo=UTC), datetime(2026, 3, 29, 23, 59, tzinfo=UTC)
    )
    assert [d.isoformat() for d in due] == [
        "2026-03-28T01:00:00+00:00",
        "2026-03-29T01:00:00+00:00",
    ]


def test_an_invalid_expression_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid cron expression"):
        Schedule("61 * * * *")


def test_the_latest_fires_walk_back_from_now_whatever_the_start() -> None:
    every_second = Schedule("* * * * * *")
    now = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    year_one = datetime.min.replace(tzinfo=UTC)
    latest = every_second.latest(year_one, now, 3)  # would be 6e10 steps walking forward
    assert [f.isoformat() for f in latest] == [
        "2026-01-01T00:00:28+00:00",
        "2026-01-01T00:00:29+00:00",
        "2026-01-01T00:00:30+00:00",
    ]
    assert every_second.latest(datetime(2026, 1, 1, 0, 0, 28, tzinfo=UTC), now, 10) == latest[1:]
    assert every_second.due(year_one, now, limit=2) == [
        datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC),
        datetime(1, 1, 1, 0, 0, 2, tzinfo=UTC),
    ]


def test_walking_back_agrees_with_walking_forward_across_dst() -> None:
    for cron, zone in [("*/30 * * * *", "America/New_York"), ("30 1 * * *", "Europe/Berlin")]:
        schedule = Schedule(cron, zone)
        start, end = datetime(2026, 3, 7, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
        forward = schedule.due(start, end)
        assert schedule.latest(start, end, len(forward) + 5) == forward
