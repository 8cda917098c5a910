from datetime import timedelta

import pytest

from engine.core.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("10m", 600),
        ("1h30m", 5400),
        ("2d", 172800),
        (45, 45),
        (1.5, 1.5),
    ],
)
def test_parses_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "10", "3x", "m10", "10m5", "-5s", -1, True, None])
def test_rejects_bad_durations_with_a_readable_message(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_formats_short_and_long_durations() -> None:
    assert format_duration(0.123) == "123ms"
    assert format_duration(12.34) == "12.3s"
    assert format_duration(75) == "1m15s"
    assert format_duration(3725) == "1h02m"
