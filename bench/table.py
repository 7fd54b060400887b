"""The one shape every bench reports in, so `make bench` can print them as one table.

Room: bench. A bench script measures, then hands `report()` its rows: with `--json` it prints
them as JSON lines for `bench/run.py`, which gathers every script's rows into one markdown
table (and bench/results.md); without, it prints its own rows as a table for a person.

A row is one figure of rrd's, each figure the median and spread over repeated runs, next to
what it is compared with, measured in the same run (a peer, the floor, a naive loop), and the
ratio of the two, and the issue's target with whether it was met.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

SMOKE_HELP = "tiny sizes, a few seconds: shows the script still runs; its figures mean nothing"


@dataclass(frozen=True)
class Figure:
    """Repeated measures of one quantity: the median, and min-max as the spread."""

    samples: tuple[float, ...]
    unit: str

    @classmethod
    def of(cls, samples: Iterable[float], unit: str) -> Figure:
        values = tuple(float(s) for s in samples)
        if not values:
            raise ValueError("a figure needs at least one sample")
        return cls(values, unit)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def text(self) -> str:
        """`12.3 ms (11.0-14.1)`; the spread only when there is one."""
        median = _number(self.median)
        if len(self.samples) == 1:
            return f"{median} {self.unit}"
        low, high = _number(min(self.samples)), _number(max(self.samples))
        return f"{median} {self.unit} ({low}-{high})"


@dataclass(frozen=True)
class Row:
    """One line of the table. `versus` maps what rrd is compared with to its figure; `ratio`
    says how the two compare in words a reader checks at a glance (`0.82 of the floor`)."""

    bench: str
    figure: str
    rrd: Figure
    versus: dict[str, Figure] = field(default_factory=dict)
    ratio: str = ""
    target: str = ""
    met: bool | None = None

    def as_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> Row:
        data = json.loads(line)
        data["rrd"] = Figure(tuple(data["rrd"]["samples"]), data["rrd"]["unit"])
        data["versus"] = {
            name: Figure(tuple(value["samples"]), value["unit"])
            for name, value in data["versus"].items()
        }
        return cls(**data)


def ratio(numerator: float, denominator: float, words: str) -> str:
    """`0.82 of the floor`, `3.1x ProcessPoolExecutor`: the caller says which way it reads."""
    if denominator == 0:
        return f"- {words}"
    value = numerator / denominator
    return f"{value:.2f} {words}" if value < 10 else f"{value:.0f} {words}"


def markdown(rows: Sequence[Row]) -> str:
    """The rows as one markdown table."""
    lines = [
        "| bench | figure | rrd | compared with | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        versus = "; ".join(f"{name}: {value.text()}" for name, value in row.versus.items())
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        cells = [row.bench, row.figure, row.rrd.text(), versus, row.ratio, row.target, met]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def report(rows: Sequence[Row], *, as_json: bool) -> None:
    """What a bench script ends with."""
    if as_json:
        for row in rows:
            print(row.as_json())
    else:
        print(markdown(rows))
    sys.stdout.flush()


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"
