"""Durations and sizes as people write them in a config: `1m30s`, `500ms`, `64MiB`.

Room: config. Imports only `rrd.errors` and the standard library.

Durations are Go's (`time.ParseDuration`): an optional sign, then one or more decimal numbers,
each with a unit among ns, us (or µs), ms, s, m, h. They are returned as seconds in a float,
truncated to whole nanoseconds as Go does. A bare number other than `0` is refused: `5` could
mean seconds or milliseconds, and RoadRunner reads it as 5 nanoseconds.

Sizes are bytes. `KB`, `MB`, `GB`, `TB` are powers of 1000 and `KiB`, `MiB`, `GiB`, `TiB` powers
of 1024 (units are matched without regard to case); a bare number is bytes. A lone `K`, `M` or
`G` is refused because it is read both ways in the wild.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Final

from rrd.errors import ConfigError

__all__ = [
    "DURATION",
    "SIZE",
    "Duration",
    "Size",
    "Unit",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
]


class Unit:
    """The marker inside `Duration` and `Size` that tells the schema how to read a field."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Unit({self.name!r})"


DURATION: Final = Unit("duration")
SIZE: Final = Unit("size")

Duration = Annotated[float, DURATION]
"""A field in seconds, written in the config as a Go duration (`1m30s`)."""

Size = Annotated[int, SIZE]
"""A field in bytes, written in the config as `512`, `64KB` or `64KiB`."""

_SECOND = 10**9
_DURATION_UNITS: Final = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,  # U+00B5 MICRO SIGN, as Go prints it
    "μs": 10**3,  # U+03BC GREEK SMALL LETTER MU, which Go accepts too
    "ms": 10**6,
    "s": _SECOND,
    "m": 60 * _SECOND,
    "h": 3600 * _SECOND,
}
_MAX_NS = 2**63 - 1  # Go's time.Duration is an int64 of nanoseconds
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")
_BARE_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")

_SIZE_UNITS: Final = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)")


def _exact(number: str) -> tuple[int, int]:
    """A decimal number as numerator and denominator (a power of ten): "1.25" -> (125, 100).
    Exact, as Go reads durations; integers, because `fractions` costs the daemon 0.5 MiB."""
    whole, _, fraction = number.partition(".")
    return int(whole + fraction or "0"), 10 ** len(fraction)


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def parse_duration(text: str) -> float:
    """Read a Go duration (`1m30s`, `500ms`, `-1.5h`, `0`) as seconds."""
    if not isinstance(text, str):
        raise ConfigError(f'expected a duration such as "5s", got {text!r}')

    def bad(why: str) -> ConfigError:
        return ConfigError(f"bad duration {_quote(text)}: {why}")

    if len(text) > 1000:  # int() refuses numbers of more than 4300 digits
        raise bad("too long")
    body = text
    sign = 1
    if body[:1] in ("-", "+"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise bad('empty; write a number and a unit, as "5s"')
    if _BARE_NUMBER.fullmatch(body):
        raise bad(f"durations need a unit, as {_quote(text + 's')}")
    total, denominator = 0, 1
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        assert match is not None  # the pattern matches the empty string
        number, unit = match.groups()
        if number in ("", "."):
            raise bad(f"expected a number at {_quote(body[pos:])}")
        if not unit:
            raise bad(f"missing unit after {number}; use ns, us, ms, s, m or h")
        if unit not in _DURATION_UNITS:
            raise bad(f"unknown unit {_quote(unit)}; use ns, us, ms, s, m or h")
        part, scale = _exact(number)
        total = total * scale + part * _DURATION_UNITS[unit] * denominator
        denominator *= scale
        pos = match.end()
    ns = sign * (total // denominator)
    if abs(ns) > _MAX_NS:
        raise bad("out of range (at most about 292 years)")
    return ns / 1e9


def _decimal(value: int, scale: int) -> str:
    whole, frac = divmod(value, scale)
    digits = len(str(scale)) - 1
    fraction = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{fraction}" if fraction else str(whole)


def format_duration(seconds: float) -> str:
    """Write seconds as the shortest Go duration: 90 -> `1m30s`, 0.5 -> `500ms`, 0 -> `0s`."""
    numerator, denominator = float(seconds).as_integer_ratio()
    ns, rest = divmod(numerator * _SECOND, denominator)
    if 2 * rest > denominator or (2 * rest == denominator and ns % 2):
        ns += 1  # to the nearest, ties to even, as round() does
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < _SECOND:
        for unit, scale in (("ms", 10**6), ("µs", 10**3)):
            if ns >= scale:
                return f"{sign}{_decimal(ns, scale)}{unit}"
        return f"{sign}{ns}ns"
    hours, rest = divmod(ns, 3600 * _SECOND)
    minutes, rest = divmod(rest, 60 * _SECOND)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if rest:
        parts.append(f"{_decimal(rest, _SECOND)}s")
    return sign + "".join(parts)


def parse_size(text: str | int) -> int:
    """Read a size in bytes: `512`, `64KB` (64 000), `64KiB` (65 536), `1.5GB`."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise ConfigError(f'expected a size such as "64MiB", got {text!r}')
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"bad size {text}: must not be negative")
        return text
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ConfigError(
            f'bad size {_quote(text)}: expected a number of bytes, as "512", "64KB" or "64KiB"'
        )
    number, unit = match.groups()
    if len(number) > 1000:  # int() refuses numbers of more than 4300 digits
        raise ConfigError(f"bad size: {len(number)} digits is too long")
    scale = _SIZE_UNITS.get(unit.lower())
    if scale is None:
        raise ConfigError(
            f"bad size {_quote(text)}: unknown unit {_quote(unit)}; use B, KB, MB, GB, TB "
            "(powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
        )
    part, denominator = _exact(number)
    size, rest = divmod(part * scale, denominator)
    if rest:
        raise ConfigError(f"bad size {_quote(text)}: not a whole number of bytes")
    return size


def format_size(size: int) -> str:
    """Write bytes with the largest unit that divides them: 67108864 -> `64MiB`, 1000 -> `1KB`."""
    for unit, scale in (
        ("TiB", 2**40),
        ("GiB", 2**30),
        ("MiB", 2**20),
        ("KiB", 2**10),
        ("TB", 10**12),
        ("GB", 10**9),
        ("MB", 10**6),
        ("KB", 10**3),
    ):
        if size and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)
