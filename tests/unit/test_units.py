"""Durations and sizes: Go's duration syntax both ways, and byte sizes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrd.config import format_duration, parse_duration, parse_size
from rrd.config.units import format_size
from rrd.errors import ConfigError

UNITS_NS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("-0", 0.0),
        ("0s", 0.0),
        ("1s", 1.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("1.5s", 1.5),
        ("-1s", -1.0),
        ("+2m", 120.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("1h2m3s4ms5us6ns", 3723.004005006),
        ("3µs", 3e-6),
        ("3μs", 3e-6),  # Greek mu, which Go accepts too
        ("1.5ns", 1e-9),  # truncated to whole nanoseconds, as Go does
        ("1s1s", 2.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("5", 'bad duration "5": durations need a unit, as "5s"'),
        ("1.5", 'bad duration "1.5": durations need a unit, as "1.5s"'),
        ("", 'bad duration "": empty'),
        ("-", 'bad duration "-": empty'),
        ("5x", 'unknown unit "x"'),
        ("5S", 'unknown unit "S"'),
        ("1h30", "missing unit after 30"),
        ("1:30", 'unknown unit ":"'),
        ("s", 'expected a number at "s"'),
        (" 5s", 'expected a number at " 5s"'),
        ("1.2.3s", "missing unit after 1.2"),
        ("999999999h", "out of range"),
    ],
)
def test_parse_duration_rejects(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=r"^bad duration") as caught:
        parse_duration(text)
    assert why in str(caught.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1.5, "1.5s"),
        (90, "1m30s"),
        (0.5, "500ms"),
        (3600, "1h"),
        (3601, "1h1s"),
        (60, "1m"),
        (3660.25, "1h1m0.25s"),
        (-1, "-1s"),
        (0.0015, "1.5ms"),
        (1.5e-6, "1.5µs"),
        (1e-9, "1ns"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=-(2**50), max_value=2**50))
def test_duration_round_trip(ns: int) -> None:
    seconds = ns / 1e9
    assert parse_duration(format_duration(seconds)) == seconds


PARTS = st.tuples(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(UNITS_NS)))


@given(st.lists(PARTS, min_size=1, max_size=6), st.booleans())
def test_duration_is_the_sum_of_its_parts(parts: list[tuple[int, str]], negative: bool) -> None:
    text = ("-" if negative else "") + "".join(f"{n}{unit}" for n, unit in parts)
    total = sum(n * UNITS_NS[unit] for n, unit in parts)
    if total > 2**63 - 1:  # Go's time.Duration is int64 nanoseconds
        with pytest.raises(ConfigError, match="out of range"):
            parse_duration(text)
        return
    assert parse_duration(text) == (-total if negative else total) / 1e9


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512", 512),
        (512, 512),
        ("0", 0),
        ("512B", 512),
        ("64KB", 64_000),
        ("64kb", 64_000),
        ("64KiB", 65_536),
        ("10MB", 10_000_000),
        ("10MiB", 10 * 2**20),
        ("1GB", 10**9),
        ("1GiB", 2**30),
        ("1.5KB", 1500),
        ("2 MiB", 2 * 2**20),
        ("1TiB", 2**40),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("10K", 'unknown unit "K"'),
        ("10M", 'unknown unit "M"'),
        ("1.5B", "not a whole number of bytes"),
        ("-1", "expected a number of bytes"),
        (-1, "must not be negative"),
        ("lots", "expected a number of bytes"),
        (True, "expected a size"),
    ],
)
def test_parse_size_rejects(text: str | int, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_size(text)
    assert why in str(caught.value)


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0"), (512, "512"), (1024, "1KiB"), (64 * 2**20, "64MiB"), (1000, "1KB"), (1500, "1500")],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size
