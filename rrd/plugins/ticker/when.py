"""When each tick of a schedule falls due: cron expressions and aligned intervals, in a time zone.

Room: plugins (ticker). Imports the standard library only; croniter is imported lazily, by the
first cron expression checked, so a config without cron never loads it. Pure: no asyncio, no
I/O but reading the host's zone in `parse_timezone("")`. Times are float unix seconds on the
wall clock.

croniter reads cron expressions (five fields, six with seconds last, and the macros); only its
words are looked at first, so that its own extensions (H, R, L, W, #, ?) are refused, and its
reading, as plain numbers, is what a schedule then runs.
croniter walks naive local wall-clock times (pure calendar arithmetic); this module maps each
match to real instants the way Debian's cron and cronie do across daylight saving changes.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
"""The macros cron users know, as the five fields they stand for (no @reboot: rrd has no boot)."""

MAX_SHIFT = 3 * 3600
"""The largest backward clock change looked for ahead of a tick: tzdata's since 1970 are at most
three hours (Antarctica/Casey, 2010), bar one of Antarctica/Vostok's in 1994."""

_LOCALTIME = Path("/etc/localtime")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELD_SPLIT = re.compile(r"[ \t]+")
_ATOM = re.compile(r"\*|[0-9]+|" + "|".join((*_MONTHS, *_WEEKDAYS)), re.IGNORECASE | re.ASCII)
_ATOM_SEPARATORS = re.compile(r"[,/-]")
_SAME_ENDS = re.compile(r"\b([0-9]+)-\1\b(?!/)")
_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week", "second")
_ONE_SECOND = timedelta(seconds=1)


def parse_timezone(name: str) -> ZoneInfo:
    """The zone named NAME in IANA's database; "" is the host's zone (UTC if it has none)."""
    # Imported here: zoneinfo brings sysconfig (0.7 MiB), which a config without one spares.
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name == "":
        return _host_timezone(os.environ.get("TZ"), _LOCALTIME)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    raise ValueError(f"unknown timezone {name!r}; names are IANA's, such as Europe/Berlin")


def _host_timezone(tz_env: str | None, localtime: Path) -> ZoneInfo:
    """The zone TZ names if it is a valid key, else /etc/localtime's, else UTC."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if tz_env:
        key = tz_env.removeprefix(":")
        try:
            return ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    try:
        parts = localtime.resolve(strict=True).parts
        if "zoneinfo" in parts:
            key = "/".join(parts[len(parts) - parts[::-1].index("zoneinfo") :])
            try:
                return ZoneInfo(key)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                pass
        with localtime.open("rb") as tzif:
            return ZoneInfo.from_file(tzif, key="localtime")
    except (OSError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class _CronSpec:
    """A checked expression: croniter's canonical form of it, and whether its time is fixed."""

    canonical: str
    fixed: bool


def check_cron(expr: str) -> None:
    """Refuse, with a one-line ValueError, an expression cron users would not write."""
    _parse_cron(expr)


def _parse_cron(expr: str) -> _CronSpec:
    """croniter reads the expression; before it, a look at its words keeps out what cron does
    not know (croniter's H, R, L, W, # and ?); after it, its reading as plain numbers is what
    the schedule runs, whatever croniter's version."""
    text = expr.strip(" \t\r\n")
    if not text:
        raise ValueError(
            "empty cron expression; give five fields (minute hour day-of-month month "
            "day-of-week), six with seconds last, or a macro such as @daily"
        )
    if text.startswith("@"):
        macro = MACROS.get(text.lower())
        if macro is None:
            raise ValueError(f"unknown cron macro {expr!r}; the macros are " + ", ".join(MACROS))
        text = macro
    fields = tuple(_FIELD_SPLIT.split(text))
    if len(fields) not in (5, 6):
        raise ValueError(
            f"cron expression {expr!r} has {len(fields)} fields; give 5 (minute hour "
            "day-of-month month day-of-week), or 6 with seconds last"
        )
    for name, field in zip(_FIELD_NAMES, fields, strict=False):
        for atom in _ATOM_SEPARATORS.split(field):
            if not _ATOM.fullmatch(atom):
                raise ValueError(
                    f"cron expression {expr!r}: {name} {atom!r} is not a number, '*', or a "
                    "month or day name (croniter's H, R, L, W, # and ? are not cron's)"
                )
    from croniter import CroniterBadDateError, croniter  # type: ignore[import-untyped, unused-ignore]

    plain = " ".join(_SAME_ENDS.sub(r"\1", field) for field in fields)  # croniter 7: 5-5 = *
    try:
        expanded, _ = croniter.expand(plain)
        croniter(plain, datetime(2000, 1, 1)).get_next(datetime)
    except (ValueError, TypeError, KeyError, IndexError) as exc:  # croniter's are ValueErrors
        if isinstance(exc, CroniterBadDateError):
            raise ValueError(f"cron expression {expr!r} never falls due") from None
        raise ValueError(f"cron expression {expr!r} is not valid: {_croniter_says(exc)}") from None
    canonical = " ".join(
        "*" if values == ["*"] else ",".join(str(v) for v in values) for values in expanded
    )
    fixed = len(fields) == 5 and not fields[0].startswith("*") and not fields[1].startswith("*")
    return _CronSpec(canonical, fixed)


def _croniter_says(exc: BaseException) -> str:
    """croniter's reason, in one line and without the expression it repeats."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    said = re.sub(r"^\[[^\]]*\]\s*", "", lines[-1] if "Traceback" in lines[0] else lines[0])
    return said.removeprefix("is not acceptable, ").removeprefix("is not acceptable") or (
        "croniter refuses it"
    )


def _offset(tz: ZoneInfo, t: float) -> float:
    offset = datetime.fromtimestamp(math.floor(t), tz).utcoffset()
    return 0.0 if offset is None else offset.total_seconds()


def _transition(tz: ZoneInfo, before: float, after: float) -> float:
    """The instant in (before, after] the zone's offset changes, found to the second."""
    low, high = math.floor(before), math.ceil(after)
    offset_low = _offset(tz, low)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(tz, middle) == offset_low:
            low = middle
        else:
            high = middle
    return float(high)


def _wall(tz: ZoneInfo, t: float) -> datetime:
    """The wall clock at T's whole second: a datetime rounds to the microsecond, which could
    carry T just before a second (or a clock change) over it."""
    return datetime.fromtimestamp(math.floor(t), tz).replace(tzinfo=None, fold=0)


class CronTimes:
    """The moments a cron expression falls due in a zone, with cron's rules at clock changes.

    A fixed-time job (five fields, neither minute nor hour starting with '*') whose wall time is
    skipped by a spring-forward runs once when the gap ends, and one whose wall time repeats runs
    at its first occurrence. Any other job runs at every real instant whose wall time matches.
    """

    __slots__ = ("_iter", "expr", "fixed", "tz")

    def __init__(self, expr: str, tz: ZoneInfo) -> None:
        spec = _parse_cron(expr)
        from croniter import croniter  # type: ignore[import-untyped, unused-ignore]

        self.expr = expr
        self.tz = tz
        self.fixed = spec.fixed
        self._iter: Any = croniter(spec.canonical, datetime(2000, 1, 1), ret_type=datetime)

    @property
    def text(self) -> str:
        """As `rrd ticker list` shows it: "0 3 * * * in Europe/Berlin"."""
        return f"{self.expr} in {self.tz.key or 'the host zone'}"

    def next_after(self, t: float) -> float:
        """The first moment this schedule falls due strictly after wall time T."""
        due = self._forward(t)
        if not self.fixed:
            repeated = self._repeat_ahead(t)
            if repeated is not None:
                due = min(due, repeated)
        return due

    def _match_after(self, wall: datetime) -> datetime:
        match: datetime = self._iter.get_next(datetime, start_time=wall)
        return match

    def _forward(self, t: float) -> float:
        """The first due moment among wall times after T's own, in wall-clock order."""
        tz = self.tz
        wall = _wall(tz, t)
        while True:
            wall = self._match_after(wall)
            first = wall.replace(tzinfo=tz, fold=0).timestamp()
            second = wall.replace(tzinfo=tz, fold=1).timestamp()
            if first == second:
                return first
            if first < second:
                if first > t:
                    return first
                if not self.fixed:
                    return second
                continue
            gap_end = _transition(tz, second, first)
            if self.fixed:
                return gap_end
            wall = _wall(tz, gap_end) - _ONE_SECOND

    def _repeat_ahead(self, t: float) -> float | None:
        """The first match in the second pass of wall times repeated by a clock change soon.

        Only a backward change within its own size after T repeats wall times before T's own,
        which `_forward` does not look at.
        """
        tz = self.tz
        offset = _offset(tz, t)
        shift = offset - _offset(tz, t + MAX_SHIFT)
        if shift <= 0 or _offset(tz, t + shift) == offset:
            return None
        change = _transition(tz, t, t + shift)
        start = _wall(tz, change)
        match = self._match_after(start - _ONE_SECOND)
        if match >= start + timedelta(seconds=shift):
            return None
        return match.replace(tzinfo=tz, fold=1).timestamp()


class IntervalTimes:
    """The first tick of an interval schedule; later ticks are k intervals on, monotonic."""

    __slots__ = ("align", "interval", "tz")

    def __init__(self, interval: float, align: bool, tz: ZoneInfo) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        self.interval = interval
        self.align = align
        self.tz = tz

    def first_due(self, now_wall: float) -> float:
        """Now plus the interval; aligned, the next wall-clock multiple of it after now."""
        if not self.align:
            return now_wall + self.interval
        start, strictly = now_wall, True
        while True:
            offset = _offset(self.tz, start)
            local = start + offset
            k = math.floor(local / self.interval)
            if strictly or k * self.interval != local:
                k += 1
            due = k * self.interval - offset
            if _offset(self.tz, due) == offset:
                return due
            start, strictly = _transition(self.tz, start, due), False
