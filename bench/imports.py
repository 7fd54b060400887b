"""Import time: `import rrd.sdk` in a worker, and the daemon's own imports, from -X importtime.

    .venv/bin/python bench/imports.py [--runs 7] [--json] [--smoke]

Each run is a fresh interpreter (`python -X importtime -c "import MODULE"`); the figure is the
module's cumulative time as the interpreter reports it, so the interpreter's own start-up is
not in it. A worker pays `rrd.sdk` at every start, the daemon `rrd.cli` once. Beside them:
`json`, which any Python worker imports anyway, as a yardstick. The first run after a change
compiles bytecode, so one run is made and dropped first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from table import SMOKE_HELP, Figure, Row, ratio, report

ROOT = Path(__file__).resolve().parent.parent
SDK_TARGET_MS = 10.0


def import_ms(module: str) -> float:
    """Cumulative import time of `module` in a fresh interpreter, in ms."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for line in reversed(done.stderr.splitlines()):
        _, cumulative, name = line.split("|")
        if name.strip() == module:
            return int(cumulative) / 1000
    raise SystemExit(f"no import time for {module} in:\n{done.stderr[-2000:]}")


def rows(runs: int) -> list[Row]:
    modules = ("rrd.sdk", "rrd.cli", "json")
    for module in modules:
        import_ms(module)  # compiles bytecode if needed; not counted
    samples: dict[str, list[float]] = {module: [] for module in modules}
    for _ in range(runs):
        for module in modules:  # interleaved
            samples[module].append(import_ms(module))
    sdk, daemon, yardstick = (Figure.of(samples[m], "ms") for m in modules)
    return [
        Row(
            "imports",
            "`import rrd.sdk` in a worker (cumulative)",
            sdk,
            {"import json": yardstick},
            ratio(sdk.median, yardstick.median, "x import json"),
            f"< {SDK_TARGET_MS:g} ms",
            sdk.median < SDK_TARGET_MS,
        ),
        Row(
            "imports",
            "the daemon's imports (`import rrd.cli`, cumulative; with ssl, which serve skips)",
            daemon,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    report(rows(1 if args.smoke else args.runs), as_json=args.json)


if __name__ == "__main__":
    main()
