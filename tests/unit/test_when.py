"""When a schedule's ticks fall due: cron in a zone (clock changes included) and aligned intervals.

Expected instants are worked out by hand from the zones' rules (2027): Europe/Berlin changes at
01:00 UTC on 28 March (02:00 -> 03:00) and 31 October (03:00 -> 02:00); America/New_York at
07:00 UTC on 14 March (02:00 -> 03:00) and 06:00 UTC on 7 November (02:00 -> 01:00);
Australia/Lord_Howe moves half an hour, at 15:30 UTC on 2 October (02:00 -> 02:30) and 15:00
UTC on 3 April (02:00 -> 01:30). The properties check the clock-change rules against a
brute-force walk over every minute (or second) and croniter's own reading of each expression.
"""

from __future__ import annotations

import bisect
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import TZPATH, ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from rrd.plugins.ticker import when
from rrd.plugins.ticker.when import MACROS, CronTimes, IntervalTimes, check_cron, parse_timezone

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
KOLKATA = ZoneInfo("Asia/Kolkata")
ZONE_UTC = ZoneInfo("UTC")


def utc(text: str) -> float:
    """Unix seconds of an ISO date and time read as UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def ticks(expr: str, tz: ZoneInfo, start: str, count: int) -> list[str]:
    """The next COUNT due moments after START (UTC), as UTC ISO strings."""
    times = CronTimes(expr, tz)
    t, out = utc(start), []
    for _ in range(count):
        t = times.next_after(t)
        out.append(iso(t))
    return out


# --- cron in UTC: macros, seconds, month ends, day of month or week --------------------------

MACRO_TICKS = {
    "@hourly": ["2027-01-31T11:00:00", "2027-01-31T12:00:00"],
    "@daily": ["2027-02-01T00:00:00", "2027-02-02T00:00:00"],
    "@midnight": ["2027-02-01T00:00:00", "2027-02-02T00:00:00"],
    "@weekly": ["2027-02-07T00:00:00", "2027-02-14T00:00:00"],
    "@monthly": ["2027-02-01T00:00:00", "2027-03-01T00:00:00"],
    "@yearly": ["2028-01-01T00:00:00", "2029-01-01T00:00:00"],
    "@annually": ["2028-01-01T00:00:00", "2029-01-01T00:00:00"],
}


def test_every_macro_is_tested() -> None:
    assert set(MACRO_TICKS) == set(MACROS)


@pytest.mark.parametrize(("macro", "expected"), MACRO_TICKS.items())
def test_macros(macro: str, expected: list[str]) -> None:
    # 2027-01-31 is a Sunday.
    assert ticks(macro, ZONE_UTC, "2027-01-31T10:20:00", 2) == expected
    assert ticks(macro.upper(), ZONE_UTC, "2027-01-31T10:20:00", 2) == expected


def test_macros_fixed_or_not() -> None:
    assert [CronTimes(m, ZONE_UTC).fixed for m in MACROS] == [False] + [True] * 6


@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        (
            "* * * * * */15",
            "2027-01-01T12:00:07",
            ["12:00:15", "12:00:30", "12:00:45", "12:01:00"],
        ),
        ("*/15 * * * * 30", "2027-01-01T12:00:07", ["12:00:30", "12:15:30", "12:30:30"]),
        ("0 12 * * * 0,30", "2027-01-01T11:00:00", ["12:00:00", "12:00:30"]),
        ("* * * * * *", "2027-01-01T12:00:14.9", ["12:00:15", "12:00:16"]),
    ],
)
def test_six_fields_have_seconds_last(expr: str, start: str, expected: list[str]) -> None:
    got = ticks(expr, ZONE_UTC, start, len(expected))
    assert [t[11:] for t in got] == expected
    assert not CronTimes(expr, ZONE_UTC).fixed


def test_next_is_strictly_after() -> None:
    times = CronTimes("* * * * * */15", ZONE_UTC)
    assert times.next_after(utc("2027-01-01T12:00:15")) == utc("2027-01-01T12:00:30")
    times = CronTimes("0 3 * * *", ZONE_UTC)
    assert times.next_after(utc("2027-01-01T03:00:00")) == utc("2027-01-02T03:00:00")
    assert times.next_after(utc("2027-01-01T02:59:59.999")) == utc("2027-01-01T03:00:00")


def test_a_start_a_hair_before_a_second_is_before_it() -> None:
    """datetime rounds to the microsecond; the float just below a whole second must not."""
    noon = utc("2027-01-01T12:00:00")
    assert CronTimes("0 12 * * *", ZONE_UTC).next_after(math.nextafter(noon, 0)) == noon
    change = utc("2027-10-31T01:00:00")  # Berlin: 03:00 CEST becomes 02:00 CET
    assert CronTimes("*/30 * * * *", BERLIN).next_after(math.nextafter(change, 0)) == change
    spring = utc("2027-03-28T01:00:00")
    assert CronTimes("30 2 * * *", BERLIN).next_after(math.nextafter(spring, 0)) == spring


def test_ranges_mean_what_cron_means() -> None:
    """croniter 7 reads "5-5" as the whole range; cron, croniter 2 and rrd as just 5."""
    assert ticks("0 5-5 * * *", ZONE_UTC, "2027-01-01T00:00:00", 2) == [
        "2027-01-01T05:00:00",
        "2027-01-02T05:00:00",
    ]


def test_month_ends() -> None:
    assert [t[:10] for t in ticks("0 0 31 * *", ZONE_UTC, "2027-01-15T00:00:00", 8)] == [
        "2027-01-31",
        "2027-03-31",
        "2027-05-31",
        "2027-07-31",
        "2027-08-31",
        "2027-10-31",
        "2027-12-31",
        "2028-01-31",
    ]
    assert [t[:10] for t in ticks("0 0 29 2 *", ZONE_UTC, "2027-01-01T00:00:00", 3)] == [
        "2028-02-29",
        "2032-02-29",
        "2036-02-29",
    ]


@pytest.mark.parametrize(
    ("expr", "days"),
    [
        # Both restricted: a day that is either falls due, once (Friday 13 August).
        ("0 12 13 * fri", ["08-06", "08-13", "08-20", "08-27", "09-03", "09-10", "09-13"]),
        ("0 12 * * fri", ["08-06", "08-13", "08-20"]),
        ("0 12 13 * *", ["08-13", "09-13", "10-13"]),
        ("0 12 * * 7", ["08-01", "08-08", "08-15"]),
        ("0 12 * * SUN", ["08-01", "08-08", "08-15"]),
        ("0 12 * aug-SEP 5-7", ["08-01", "08-06", "08-07", "08-08"]),
        ("0 12 1 * mon-wed", ["08-01", "08-02", "08-03", "08-04", "08-09"]),
    ],
)
def test_day_of_month_and_week(expr: str, days: list[str]) -> None:
    # 2027-08-01 is a Sunday.
    got = ticks(expr, ZONE_UTC, "2027-07-31T23:00:00", len(days))
    assert [t[5:10] for t in got] == days


# --- cron across clock changes ------------------------------------------------------------------


def test_berlin_spring_forward_fixed_job_runs_once_when_the_gap_ends() -> None:
    assert ticks("30 2 * * *", BERLIN, "2027-03-26T12:00:00", 3) == [
        "2027-03-27T01:30:00",  # 02:30 CET
        "2027-03-28T01:00:00",  # 02:30 does not exist: 03:00 CEST
        "2027-03-29T00:30:00",  # 02:30 CEST
    ]
    # Several matches in the gap collapse into one tick; so does 03:00 itself.
    assert ticks("0,30 2,3 * * *", BERLIN, "2027-03-27T12:00:00", 3) == [
        "2027-03-28T01:00:00",
        "2027-03-28T01:30:00",
        "2027-03-29T00:00:00",
    ]


def test_berlin_spring_forward_wildcard_job_skips_the_missing_hour() -> None:
    assert ticks("*/15 * * * *", BERLIN, "2027-03-28T00:20:00", 5) == [
        "2027-03-28T00:30:00",  # 01:30 CET
        "2027-03-28T00:45:00",
        "2027-03-28T01:00:00",  # 03:00 CEST: nothing between 02:00 and 03:00
        "2027-03-28T01:15:00",
        "2027-03-28T01:30:00",
    ]
    assert ticks("30 * * * *", BERLIN, "2027-03-28T00:00:00", 2) == [
        "2027-03-28T00:30:00",
        "2027-03-28T01:30:00",  # 03:30 CEST; 02:30 is skipped, not moved
    ]


def test_berlin_fall_back_fixed_job_runs_once_at_the_first_occurrence() -> None:
    assert ticks("30 2 * * *", BERLIN, "2027-10-29T12:00:00", 3) == [
        "2027-10-30T00:30:00",
        "2027-10-31T00:30:00",  # 02:30 CEST, not 02:30 CET
        "2027-11-01T01:30:00",
    ]
    # From inside the repeated hour's second pass, the next is the next day's.
    times = CronTimes("30 2 * * *", BERLIN)
    assert iso(times.next_after(utc("2027-10-31T01:10:00"))) == "2027-11-01T01:30:00"


def test_berlin_fall_back_wildcard_job_runs_in_both_passes() -> None:
    assert ticks("*/30 * * * *", BERLIN, "2027-10-30T23:40:00", 5) == [
        "2027-10-31T00:00:00",  # 02:00 CEST
        "2027-10-31T00:30:00",  # 02:30 CEST
        "2027-10-31T01:00:00",  # 02:00 CET
        "2027-10-31T01:30:00",  # 02:30 CET
        "2027-10-31T02:00:00",  # 03:00 CET
    ]
    times = CronTimes("*/30 * * * *", BERLIN)
    # Late in the first pass, the next is the second pass's 02:00, not 03:00.
    assert iso(times.next_after(utc("2027-10-31T00:40:00"))) == "2027-10-31T01:00:00"
    assert iso(times.next_after(utc("2027-10-31T00:30:00"))) == "2027-10-31T01:00:00"
    assert iso(times.next_after(utc("2027-10-31T01:10:00"))) == "2027-10-31T01:30:00"


def test_new_york() -> None:
    assert ticks("30 2 * * *", NEW_YORK, "2027-03-13T12:00:00", 2) == [
        "2027-03-14T07:00:00",  # 02:30 does not exist: 03:00 EDT
        "2027-03-15T06:30:00",
    ]
    assert ticks("30 1 * * *", NEW_YORK, "2027-11-06T12:00:00", 2) == [
        "2027-11-07T05:30:00",  # 01:30 EDT only
        "2027-11-08T06:30:00",
    ]
    assert ticks("*/30 * * * *", NEW_YORK, "2027-11-07T04:50:00", 5) == [
        "2027-11-07T05:00:00",
        "2027-11-07T05:30:00",
        "2027-11-07T06:00:00",  # 01:00 EST
        "2027-11-07T06:30:00",
        "2027-11-07T07:00:00",
    ]
    assert ticks("0 * * * *", NEW_YORK, "2027-03-14T05:30:00", 3) == [
        "2027-03-14T06:00:00",  # 01:00 EST
        "2027-03-14T07:00:00",  # 03:00 EDT; 02:00 is skipped
        "2027-03-14T08:00:00",
    ]


def test_lord_howe_half_hour_shift() -> None:
    assert ticks("15 2 * * *", LORD_HOWE, "2027-10-01T12:00:00", 3) == [
        "2027-10-01T15:45:00",  # 02:15 +10:30
        "2027-10-02T15:30:00",  # 02:15 does not exist: 02:30 +11
        "2027-10-03T15:15:00",  # 02:15 +11
    ]
    # Every quarter hour goes on every 15 minutes of real time across both changes.
    spring = ticks("*/15 * * * *", LORD_HOWE, "2027-10-02T15:00:00", 3)
    assert spring == ["2027-10-02T15:15:00", "2027-10-02T15:30:00", "2027-10-02T15:45:00"]
    autumn = ticks("*/15 * * * *", LORD_HOWE, "2027-04-03T14:20:00", 5)
    assert [t[11:16] for t in autumn] == ["14:30", "14:45", "15:00", "15:15", "15:30"]
    assert ticks("45 1 * * *", LORD_HOWE, "2027-04-03T12:00:00", 2) == [
        "2027-04-03T14:45:00",  # 01:45 +11, the first of two
        "2027-04-04T15:15:00",
    ]


def test_kolkata_half_hour_offset() -> None:
    assert ticks("0 9 * * *", KOLKATA, "2027-06-01T00:00:00", 2) == [
        "2027-06-01T03:30:00",
        "2027-06-02T03:30:00",
    ]


def test_text() -> None:
    assert CronTimes("0 3 * * *", BERLIN).text == "0 3 * * * in Europe/Berlin"


def test_fixed_time_jobs() -> None:
    assert CronTimes("0 3 * * *", BERLIN).fixed
    assert CronTimes("0-59 0-23 * * *", BERLIN).fixed
    assert not CronTimes("*/5 3 * * *", BERLIN).fixed
    assert not CronTimes("0 */2 * * *", BERLIN).fixed
    assert not CronTimes("0 3 * * * 0", BERLIN).fixed


# --- check_cron -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("", "empty cron expression"),
        ("   ", "empty cron expression"),
        ("1 2 3", "has 3 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("* * * * * * 2030", "has 7 fields"),
        ("@reboot", "unknown cron macro"),
        ("60 * * * *", "is not valid: out of range"),
        ("* 24 * * *", "is not valid: out of range"),
        ("* * 0 * *", "is not valid: out of range"),
        ("* * 32 * *", "is not valid: out of range"),
        ("* * * 13 *", "is not valid: out of range"),
        ("* * * * 8", "is not valid: out of range"),
        ("* * * * * 60", "is not valid: out of range"),
        ("*/0 * * * *", "is not valid"),
        ("H * * * *", "minute 'H' is not a number"),
        ("H(0-29) * * * *", "is not a number"),
        ("R * * * *", "is not a number"),
        ("* * L * *", "day-of-month 'L' is not a number"),
        ("* * 15W * *", "is not a number"),
        ("* * * * 1#2", "is not a number"),
        ("* * ? * *", "is not a number"),
        ("garbage", "has 1 fields"),
        ("a b c d e", "minute 'a' is not a number"),
        ("-1 * * * *", "is not a number"),
        ("1,,2 * * * *", "minute '' is not a number"),
        ("0 0 * * monday", "'monday' is not a number"),
        ("0 0 * foo *", "'foo' is not a number"),
        ("0 0 30 2 *", "never falls due"),
        ("0 0 31 4,6 *", "never falls due"),
        ("\u0661 * * * *", "is not a number"),
        ("0\u00a00 * * *", "has 4 fields"),
        ("* * * * *\n* * * * *", "has 9 fields"),
    ],
)
def test_check_cron_refuses(expr: str, says: str) -> None:
    with pytest.raises(ValueError, match="cron") as refused:
        check_cron(expr)
    message = str(refused.value)
    assert says in message
    assert "\n" not in message
    with pytest.raises(ValueError):
        CronTimes(expr, ZONE_UTC)


@pytest.mark.parametrize(
    "expr",
    [
        "* * * * *",
        "0 0 29 2 *",
        "0 0 31 1-12 *",
        "*/7 1-5/2 1,15 JAN-Jun sun,Sat",
        "0 0 * * 0-7",
        "0 0 * * 1-7",
        "0 0 * * 7",
        "  0\t0 * * *  ",
        "0 3 * * *\n",
        "* * * * * */15",
        "*/90 * * * *",
    ],
)
def test_check_cron_accepts(expr: str) -> None:
    check_cron(expr)


# --- parse_timezone ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Mars/Base", "Europe", "../etc/passwd", "/etc/localtime", "utc"])
def test_unknown_timezone(name: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_timezone(name)
    assert str(refused.value) == (
        f"unknown timezone {name!r}; names are IANA's, such as Europe/Berlin"
    )


def test_named_timezones() -> None:
    assert parse_timezone("UTC").key == "UTC"
    assert parse_timezone("Europe/Berlin") is BERLIN


def test_host_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    assert parse_timezone("") is KOLKATA
    monkeypatch.setenv("TZ", ":America/New_York")
    assert parse_timezone("") is NEW_YORK
    monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
    fallback = parse_timezone("")
    monkeypatch.delenv("TZ")
    assert parse_timezone("").utcoffset(datetime(2027, 1, 1)) == fallback.utcoffset(
        datetime(2027, 1, 1)
    )


def _zone_file(key: str) -> Path:
    for root in TZPATH:
        if (Path(root) / key).is_file():
            return Path(root) / key
    pytest.skip(f"no zoneinfo file for {key} on TZPATH")


def test_host_timezone_from_localtime(tmp_path: Path) -> None:
    kolkata = tmp_path / "share" / "zoneinfo" / "Asia" / "Kolkata"
    kolkata.parent.mkdir(parents=True)
    kolkata.write_bytes(_zone_file("Asia/Kolkata").read_bytes())
    link = tmp_path / "localtime"
    link.symlink_to(kolkata)
    assert when._host_timezone(None, link) is KOLKATA
    assert when._host_timezone("Mars/Base", link) is KOLKATA

    copy = tmp_path / "copied"
    copy.write_bytes(kolkata.read_bytes())
    zone = when._host_timezone(None, copy)
    assert zone.key == "localtime"
    assert zone.utcoffset(datetime(2027, 6, 1)) == timedelta(hours=5, minutes=30)

    assert when._host_timezone(None, tmp_path / "missing") is ZONE_UTC
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a tzif file")
    assert when._host_timezone(None, garbage) is ZONE_UTC


# --- IntervalTimes ----------------------------------------------------------------------------


def first_due(interval: float, tz: ZoneInfo, now: str, align: bool = True) -> str:
    return iso(IntervalTimes(interval, align, tz).first_due(utc(now)))


def test_interval_unaligned_is_now_plus_interval() -> None:
    assert IntervalTimes(90, False, BERLIN).first_due(1000.25) == 1090.25


def test_interval_aligned_to_wall_clock_multiples() -> None:
    assert first_due(60, ZONE_UTC, "2027-01-01T12:00:07") == "2027-01-01T12:01:00"
    assert first_due(60, ZONE_UTC, "2027-01-01T12:01:00") == "2027-01-01T12:02:00"
    assert first_due(900, BERLIN, "2027-01-01T12:00:07") == "2027-01-01T12:15:00"
    assert first_due(86400, BERLIN, "2027-01-01T12:00:00") == "2027-01-01T23:00:00"
    assert IntervalTimes(0.5, True, ZONE_UTC).first_due(10.2) == 10.5


def test_interval_aligned_in_a_half_hour_offset() -> None:
    # 09:01 IST.
    assert first_due(900, KOLKATA, "2027-06-01T03:31:00") == "2027-06-01T03:45:00"
    assert first_due(3600, KOLKATA, "2027-06-01T03:31:00") == "2027-06-01T04:30:00"


def test_interval_aligned_across_clock_changes() -> None:
    # Berlin, 01:30 CET: 02:00 never comes; 03:00 CEST is not a multiple of two hours.
    assert first_due(7200, BERLIN, "2027-03-28T00:30:00") == "2027-03-28T02:00:00"
    assert first_due(3600, BERLIN, "2027-03-28T00:30:00") == "2027-03-28T01:00:00"
    # Lord Howe 01:40 +10:30 in spring: the wall clock jumps from 02:00 to 02:30.
    assert first_due(3600, LORD_HOWE, "2027-10-02T15:10:00") == "2027-10-02T16:00:00"
    assert first_due(1800, LORD_HOWE, "2027-10-02T15:10:00") == "2027-10-02T15:30:00"
    # Lord Howe 01:40 +11 in autumn: at 02:00 the clock shows 01:30 again.
    assert first_due(3600, LORD_HOWE, "2027-04-03T14:40:00") == "2027-04-03T15:30:00"


def test_interval_must_be_positive() -> None:
    for interval in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="interval must be positive"):
            IntervalTimes(interval, True, ZONE_UTC)


@given(
    interval=st.sampled_from([1, 5, 60, 90, 900, 1800, 3600, 7200, 86400]),
    zone=st.sampled_from([BERLIN, NEW_YORK, LORD_HOWE, KOLKATA, ZONE_UTC]),
    now=st.floats(utc("2020-01-01T00:00:00"), utc("2035-01-01T00:00:00")),
)
@settings(max_examples=200, deadline=None)
def test_interval_alignment_property(interval: int, zone: ZoneInfo, now: float) -> None:
    due = IntervalTimes(interval, True, zone).first_due(now)
    assert now < due <= now + interval + 3 * 3600

    def local(t: float) -> float:
        return t + _offset_seconds(zone, t)

    assert local(due) % interval == 0
    # No aligned moment in between: walk the whole minutes (or seconds) before it.
    step = 60 if interval % 60 == 0 else 1
    t = math.floor(now / step) * step + step
    while t < due:
        assert local(t) % interval != 0
        t += step


def _offset_seconds(zone: ZoneInfo, t: float) -> float:
    offset = datetime.fromtimestamp(t, zone).utcoffset()
    assert offset is not None
    return offset.total_seconds()


# --- properties -------------------------------------------------------------------------------


def _field(low: int, high: int, names: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    if names:
        value_text = st.one_of(value.map(str), value.map(lambda v: names[v - low]))
    else:
        value_text = value.map(str)
    span = high - low + 1
    # a < b: croniter 7 reads "5-5" as every value and "5-3" as wrapping around; cron does not.
    pair = st.tuples(value, value).filter(lambda p: p[0] != p[1]).map(sorted)
    element = st.one_of(
        st.integers(1, span).map(lambda s: f"*/{s}"),
        value_text,
        pair.map(lambda p: f"{p[0]}-{p[1]}"),
        st.tuples(pair, st.integers(1, span)).map(lambda x: f"{x[0][0]}-{x[0][1]}/{x[1]}"),
    )
    return st.one_of(st.just("*"), st.lists(element, min_size=1, max_size=3).map(",".join))


_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

MINUTES = _field(0, 59)
HOURS = _field(0, 23)
DAYS = _field(1, 31)
MONTHS = _field(1, 12, _MONTH_NAMES)
WEEKDAYS = st.one_of(_field(0, 6, _DAY_NAMES), st.just("7"))
SECONDS = _field(0, 59)


@st.composite
def five_fields(draw: st.DrawFn, dense: bool = False) -> str:
    """A five-field expression; DENSE ones fall due every day, so a window around a change
    has ticks."""
    hours = st.one_of(HOURS, st.sampled_from(["0-23", "1,2", "1-3", "2"])) if dense else HOURS
    days = st.just("*") if dense else DAYS
    months = st.just("*") if dense else MONTHS
    weekdays = st.just("*") if dense else WEEKDAYS
    expr = " ".join(draw(f) for f in (MINUTES, hours, days, months, weekdays))
    assume(_valid(expr))
    return expr


def _valid(expr: str) -> bool:
    try:
        check_cron(expr)
    except ValueError:
        return False
    return True


def _croniter_matches(expr: str, start: datetime, end: datetime) -> list[datetime]:
    """croniter's own reading of EXPR: the naive wall times in (start, end]."""
    found = []
    reader = croniter(expr, start, ret_type=datetime)
    while (match := reader.get_next(datetime)) <= end:
        found.append(match)
    return found


@given(expr=five_fields(), start=st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1)))
@example(expr="0 0 1-31 * mon", start=datetime(2027, 1, 1))
@example(expr="0 0 */1 * 1", start=datetime(2027, 1, 1))
@example(expr="0 0 1-31 * */2", start=datetime(2027, 1, 1))
@example(expr="0 0 13 * 0-6", start=datetime(2027, 1, 1))
@example(expr="0 0 13 * 0,1,2,3,4,5,6", start=datetime(2027, 1, 1))
@example(expr="0 0 1,15 * 1-5", start=datetime(2027, 1, 1))
@settings(max_examples=150, deadline=None)
def test_same_times_as_croniter_reads_the_expression(expr: str, start: datetime) -> None:
    """In UTC (no clock changes) the ticks are exactly croniter's: our canonical form of an
    expression means what croniter takes the expression as written to mean."""
    reader = croniter(expr, start, ret_type=datetime)
    times = CronTimes(expr, ZONE_UTC)
    t = start.replace(tzinfo=UTC).timestamp()
    for _ in range(12):
        t = times.next_after(t)
        assert datetime.fromtimestamp(t, UTC).replace(tzinfo=None) == reader.get_next(datetime)


CHANGES = [
    (BERLIN, "2027-03-28T01:00:00"),
    (BERLIN, "2027-10-31T01:00:00"),
    (NEW_YORK, "2027-03-14T07:00:00"),
    (NEW_YORK, "2027-11-07T06:00:00"),
    (LORD_HOWE, "2027-10-02T15:30:00"),
    (LORD_HOWE, "2027-04-03T15:00:00"),
    (ZoneInfo("Australia/Sydney"), "2027-04-03T16:00:00"),
    (ZoneInfo("Australia/Sydney"), "2027-10-02T16:00:00"),
    # Three hours back, across midnight: 02:00 +11 becomes 23:00 +08 the day before.
    (ZoneInfo("Antarctica/Casey"), "2010-03-04T15:00:00"),
]


def test_changes_are_where_the_docstring_says() -> None:
    for zone, moment in CHANGES:
        t = utc(moment)
        assert _offset_seconds(zone, t - 1) != _offset_seconds(zone, t)


def _brute_force(expr: str, zone: ZoneInfo, start: float, end: float, step: int) -> list[float]:
    """Every STEP-second instant in (start, end] that falls due, by cron's rules, walked one by
    one: a match runs at each instant showing it, a fixed-time job only at the first; a
    fixed-time job's matches that the clock skips run once as the clock jumps."""
    fields = MACROS.get(expr.lower(), expr).split()
    fixed = len(fields) == 5 and not fields[0].startswith("*") and not fields[1].startswith("*")
    slack = timedelta(hours=3)
    walls = _croniter_matches(
        expr,
        datetime.fromtimestamp(start, zone).replace(tzinfo=None) - slack,
        datetime.fromtimestamp(end, zone).replace(tzinfo=None) + slack,
    )
    matching = set(walls)
    due: list[float] = []
    u = (int(start) // step + 1) * step
    previous = datetime.fromtimestamp(u - step, zone).replace(tzinfo=None, fold=0)
    while u <= end:
        shown = datetime.fromtimestamp(u, zone)
        wall = shown.replace(tzinfo=None, fold=0)
        first_after_previous = bisect.bisect_right(walls, previous)
        jumped_over_a_match = (
            wall - previous > timedelta(seconds=step)
            and first_after_previous < len(walls)
            and walls[first_after_previous] < wall
        )
        shows_a_match = wall in matching and (not fixed or shown.fold == 0)
        if shows_a_match or (fixed and jumped_over_a_match):
            due.append(float(u))
        previous = wall
        u += step
    return due


def _walk(expr: str, zone: ZoneInfo, start: float, end: float) -> list[float]:
    times = CronTimes(expr, zone)
    got, t = [], start
    while (t := times.next_after(t)) <= end:
        got.append(t)
    return got


@given(
    expr=st.one_of(five_fields(dense=True), five_fields()),
    change=st.sampled_from(CHANGES),
    before=st.floats(-3 * 3600, 9 * 3600),
)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_clock_changes_match_a_brute_force_walk(
    expr: str, change: tuple[ZoneInfo, str], before: float
) -> None:
    zone, moment = change
    start = utc(moment) - before
    got = _walk(expr, zone, start, start + 12 * 3600)
    assert got == _brute_force(expr, zone, start, start + 12 * 3600, 60)


@given(
    seconds=SECONDS,
    minutes=st.sampled_from(["*", "*/10", "0-5,30", "59"]),
    change=st.sampled_from(CHANGES),
    before=st.floats(-1800, 3600),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_clock_changes_with_seconds_match_a_brute_force_walk(
    seconds: str, minutes: str, change: tuple[ZoneInfo, str], before: float
) -> None:
    zone, moment = change
    expr = f"{minutes} * * * * {seconds}"
    start = utc(moment) - before
    got = _walk(expr, zone, start, start + 2 * 3600)
    assert got == _brute_force(expr, zone, start, start + 2 * 3600, 1)


@given(
    expr=five_fields(),
    zone=st.sampled_from([BERLIN, NEW_YORK, LORD_HOWE, KOLKATA, ZoneInfo("Australia/Sydney")]),
    start=st.floats(utc("2000-01-01T00:00:00"), utc("2040-01-01T00:00:00")),
)
@settings(max_examples=150, deadline=None)
def test_ticks_increase_and_show_a_matching_wall_time(
    expr: str, zone: ZoneInfo, start: float
) -> None:
    times = CronTimes(expr, zone)
    t = start
    for _ in range(15):
        due = times.next_after(t)
        assert due > t
        shown = datetime.fromtimestamp(due, zone)
        wall = shown.replace(tzinfo=None, fold=0)
        in_gap = _offset_seconds(zone, due - 1) < _offset_seconds(zone, due)
        if not (times.fixed and in_gap):
            matches = _croniter_matches(expr, wall - timedelta(seconds=1), wall)
            assert matches == [wall]
        if times.fixed:
            assert shown.fold == 0
        t = due


def test_croniter_is_imported_only_for_cron() -> None:
    probe = (
        "import sys; from zoneinfo import ZoneInfo\n"
        "from rrd.plugins.ticker.when import IntervalTimes, check_cron, parse_timezone\n"
        "parse_timezone('Europe/Berlin')\n"
        "IntervalTimes(60, True, ZoneInfo('UTC')).first_due(0.0)\n"
        "assert 'croniter' not in sys.modules, 'croniter imported'\n"
        "check_cron('0 3 * * *')\n"
        "assert 'croniter' in sys.modules, 'croniter did not read the expression'\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=30)
