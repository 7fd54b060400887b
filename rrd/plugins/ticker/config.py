"""The `ticker` section: the default schedule (`interval`, as RoadRunner's), and named ones.

Room: plugins (ticker). Imports config and errors, and the ticker's `when` only to check a
cron expression or a timezone that is written (at its line).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rrd.config import Duration, PoolConfig, setting
from rrd.errors import ConfigError

DEFAULT_INTERVAL = 1.0
MIN_INTERVAL = 0.001
"""The shortest interval: below it a tick would fall due before the last was sent."""

DEFAULT_SCHEDULE = "default"
"""The name of the schedule `ticker.interval` makes; a named schedule may not take it."""


def default_state_dir(environ: Mapping[str, str]) -> str | None:
    """systemd's `StateDirectory=` ($STATE_DIRECTORY, the first of its ':'-separated paths), or
    None: no persistence."""
    first = environ.get("STATE_DIRECTORY", "").split(":", 1)[0]
    return first or None


def _tick_interval(seconds: float) -> None:
    if 0 < seconds < MIN_INTERVAL:
        raise ValueError(
            "must be at least 1ms (or 0, which means 1s): shorter ticks could only be skipped"
        )


def _positive(seconds: float) -> None:
    if seconds <= 0:
        raise ValueError("must be positive: a tick without a timeout could stop the clock")


def _json_object(text: str) -> None:
    if not text:
        return
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError('must be a JSON object, such as \'{"job": "report"}\'')


def _state_dir(path: str) -> None:
    if path:
        from rrd.plugins.ticker.state import directory_problem

        problem = directory_problem(path)
        if problem is not None:
            raise ValueError(f"cannot keep the last ticks in {path}: {problem}")


def _cron(text: str) -> None:
    if text:
        from rrd.plugins.ticker.when import check_cron  # croniter only for a cron schedule

        check_cron(text)


def _timezone(name: str) -> None:
    if not name:
        return
    from rrd.plugins.ticker.when import parse_timezone

    parse_timezone(name)  # ValueError, with the message, for a name zoneinfo does not know


@dataclass(frozen=True)
class ScheduleConfig:
    """One named schedule of `ticker.schedules`: when its ticks fall due, and what happens when
    the pool is busy, rrd was behind, or the host slept (APScheduler's words where they fit)."""

    interval: Duration = setting(
        0.0,
        "Time between two ticks (at least 1ms); give this or `cron`.",
        minimum=0,
        check=_tick_interval,
    )
    cron: str = setting(
        "",
        "A cron expression: five fields (minute hour day month weekday), six with seconds as "
        "the last, or @hourly, @daily, @weekly, @monthly, @yearly; give this or `interval`.",
        check=_cron,
    )
    timezone: str = setting(
        "",
        "The IANA timezone cron times are read in (Europe/Berlin); empty: the host's. A job in "
        "the hour skipped by a spring-forward runs once right after it; one in the hour "
        "repeated by a fall-back runs once.",
        check=_timezone,
    )
    payload: str = setting(
        "",
        "A JSON object whose fields are merged into each tick's body, beside `tick`: "
        '\'{"job": "report"}\'.',
        check=_json_object,
    )
    max_in_flight: int = setting(
        1,
        "Ticks of this schedule that may run at once; one due while as many run is skipped "
        "(busy). 1 is `overlap: skip`.",
        minimum=1,
    )
    misfire_grace: Duration = setting(
        0.0,
        "How late a tick may still be sent (after a stall, a busy loop, a suspended host); "
        "later ones are skipped as late. 0: until the next tick falls due.",
        minimum=0,
    )
    coalesce: bool = setting(
        False,
        "After a stall, send one tick for all the ticks still within grace, not each (the "
        "others are counted as coalesced).",
    )
    jitter: Duration = setting(
        0.0,
        "Delay each tick by a random time up to this, drawn from a generator seeded with the "
        "host's and the schedule's names, so that hosts differ.",
        minimum=0,
    )
    expires: Duration = setting(
        0.0,
        "Drop a tick (skipped: expired) that found no free worker within this; 0: the pool's "
        "allocate_timeout, then it fails as no_worker.",
        minimum=0,
    )
    align: bool = setting(
        False,
        "Interval ticks on wall-clock multiples of the interval in `timezone` (every minute "
        "at :00, every 15m at :00, :15, ...).",
    )
    catch_up: Literal["none", "once"] = setting(
        "none",
        "once: at start, send one tick if one fell due while rrd was down (needs a state "
        "directory, as systemd's Persistent=).",
    )

    @classmethod
    def example(cls) -> ScheduleConfig:
        """A valid schedule with every key at its default but `interval` (for the docs)."""
        return cls(interval=60.0)

    def __post_init__(self) -> None:
        if bool(self.interval) == bool(self.cron):
            raise ConfigError(
                "give a schedule either `interval` or `cron`" + (", not both" if self.cron else ""),
                key="cron" if self.cron else None,
            )
        if self.align and self.cron:
            raise ConfigError("align is for interval ticks; a cron time is aligned", key="align")
        if self.interval and self.jitter >= self.interval:
            raise ConfigError(
                "must be shorter than the interval: ticks would overtake each other",
                key="jitter",
            )
        if self.misfire_grace and self.jitter > self.misfire_grace:
            raise ConfigError(
                "must not exceed misfire_grace: a tick delayed by its own jitter would be late",
                key="jitter",
            )
        if "tick" in self.fields:
            raise ConfigError("`tick` is the tick's number, which rrd writes", key="payload")

    @property
    def fields(self) -> dict[str, Any]:
        """`payload`, read."""
        return dict(json.loads(self.payload)) if self.payload else {}


@dataclass(frozen=True)
class TickerConfig:
    """The `ticker` section."""

    interval: Duration = setting(
        DEFAULT_INTERVAL,
        "Time between two ticks, as a Go duration; at least 1ms, and 0 means 1s.",
        minimum=0,
        check=_tick_interval,
    )
    exec_timeout: Duration = setting(
        60.0,
        "Longest a worker may spend on one tick; past it the worker is killed and "
        "replaced, so a hung worker never stops the clock.",
        check=_positive,
    )
    overlap: Literal["skip", "parallel"] = setting(
        "skip",
        "What happens when a tick falls due while the previous one still runs: skip "
        "it (counted), or run it in parallel, up to the pool's size.",
    )
    schedules: dict[str, ScheduleConfig] = setting(
        {},
        "Named schedules on the same pool, each with its interval or cron time and its "
        "policies; the worker sees the name in the context (`schedule`). With schedules, "
        "`interval` makes the schedule `default` only when written.",
    )
    state_dir: str = setting(
        "",
        "Where each schedule's last tick is kept, so that `lastTick` is true after a restart "
        "and `catch_up` can work; empty: $STATE_DIRECTORY (systemd's StateDirectory=), or "
        "nowhere.",
        check=_state_dir,
    )
    pool: PoolConfig = setting(
        PoolConfig(), "The ticker's worker pool, as RoadRunner's pool block."
    )

    def __post_init__(self) -> None:
        catching_up = [name for name, s in self.schedules.items() if s.catch_up != "none"]
        if catching_up and not (self.state_dir or default_state_dir(os.environ)):
            raise ConfigError(
                f"schedule {', '.join(catching_up)} asks for catch_up, which needs to know when "
                "the last tick was: set ticker.state_dir (or run under systemd with "
                "StateDirectory=)",
                key="state_dir",
            )
        if DEFAULT_SCHEDULE in self.schedules:
            raise ConfigError(
                f"{DEFAULT_SCHEDULE!r} is the schedule ticker.interval makes; name it otherwise",
                key="schedules",
            )
