"""gpulab.units: durations and GPU-hours, as config and the UI spell them."""

import math

import pytest
from traitlets import HasTraits, TraitError

from gpulab.units import Duration, format_duration, parse_duration, parse_gpu_hours


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("8h", 28800.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        (" 2d 4h ", 187200.0),
        ("30m1h", 5400.0),
        ("1.5h", 5400.0),
        (".5m", 30.0),
        ("0s", 0.0),
        ("1w2d3h4m5s", 604800.0 + 172800 + 10800 + 240 + 5),
    ],
)
def test_parse_duration_good(value, seconds):
    assert parse_duration(value) == seconds
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -0.5,
        "-1h",
        "",
        "   ",
        "h",
        "8x",
        "8 hours",
        "8H",
        "1M",
        "1h1h",
        "1h30",
        "h30m",
        "1h-30m",
        "1e3s",
        "1,5h",
        "inf",
        math.inf,
        math.nan,
        True,
        None,
        [],
        "8h and then some",
    ],
)
def test_parse_duration_bad(value):
    with pytest.raises(ValueError, match=r"must be a number of seconds or a string like '90s'"):
        parse_duration(value)


def test_parse_duration_error_names_the_setting_and_the_units():
    with pytest.raises(ValueError) as info:
        parse_duration("8y", name="quota.defaults.window")
    message = str(info.value)
    assert message.startswith("quota.defaults.window must be ")
    assert "units: w, d, h, m, s" in message
    assert message.endswith("not '8y'")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "0.25s"),
        (45, "45s"),
        (90, "1m 30s"),
        (5400, "1h 30m"),
        (28800, "8h"),
        (187200, "2d 4h"),
        (604800, "1w"),
        (694861, "1w 1d 1h 1m 1s"),
        (59.6, "1m"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, 1, 59, 61, 3599, 3600, 5400, 90061, 694861, 10**7])
def test_format_duration_reads_back(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("seconds", [-1, math.inf, math.nan, "8h", None, True])
def test_format_duration_bad(seconds):
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0"):
        format_duration(seconds)


@pytest.mark.parametrize(("value", "hours"), [(0, 0.0), (100, 100.0), (2.5, 2.5)])
def test_parse_gpu_hours_good(value, hours):
    assert parse_gpu_hours(value) == hours
    assert isinstance(parse_gpu_hours(value), float)


@pytest.mark.parametrize("value", [-1, -0.01, math.inf, math.nan, "100", "100h", True, None, []])
def test_parse_gpu_hours_bad(value):
    with pytest.raises(ValueError, match=r"^budget must be a number of GPU-hours >= 0, not "):
        parse_gpu_hours(value, name="budget")


class Limits(HasTraits):
    session = Duration("8h")
    grace = Duration(300, allow_none=True)
    idle = Duration(None, allow_none=True)


def test_duration_trait_defaults_are_seconds():
    limits = Limits()
    assert limits.session == 28800.0
    assert limits.grace == 300.0
    assert limits.idle is None


@pytest.mark.parametrize(("value", "seconds"), [("1h30m", 5400.0), (60, 60.0), ("2d", 172800.0)])
def test_duration_trait_accepts_strings_and_numbers(value, seconds):
    limits = Limits(session=value)
    assert limits.session == seconds


def test_duration_trait_allow_none():
    assert Limits(grace=None).grace is None
    with pytest.raises(
        TraitError, match=r"^Limits\.session must be a duration like '8h', not None$"
    ):
        Limits(session=None)


@pytest.mark.parametrize("value", ["8y", -5, "", True, [1]])
def test_duration_trait_error_names_class_trait_and_value(value):
    with pytest.raises(TraitError) as info:
        Limits(session=value)
    assert str(info.value) == f"Limits.session must be a duration like '8h', not {value!r}"


def test_duration_trait_from_command_line_string():
    trait = Limits.class_traits()["grace"]
    assert trait.from_string("None") is None
    assert Limits(grace=trait.from_string("15m")).grace == 900.0


def test_duration_trait_bad_string_default_fails_at_definition():
    with pytest.raises(ValueError, match="Duration default must be"):
        Duration("eight hours")
