"""`make bench`: every bench, one after the other, as one markdown table in bench/results.md.

    .venv/bin/python bench/run.py [--smoke] [--only exec ticker ...] [--output bench/results.md]

Each bench script runs in its own process (`--json`), so one that fails costs its rows, not
the table: its error is shown where its rows would be. The peers (supervisord, circus) are
installed first into bench/.peers from PyPI; without them the rows name only what ran.
Benches are run one at a time, never beside each other: they measure the same two CPUs.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from table import SMOKE_HELP, Row, markdown

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

SECTIONS = {
    "exec": "1. exec round trip",
    "ticker": "2. ticker accuracy",
    "recovery": "3. crash recovery",
    "startup": "4. start-up",
    "footprint": "5. footprint",
    "reload": "6. reload",
    "stop": "7. stop",
    "scaling": "8. scaling",
    "observability": "9. observability",
    "schedules": "10. schedules",
    "imports": "import time",
}
BENCH_TIMEOUT = 1800.0


def run_one(name: str, smoke: bool) -> tuple[list[Row], str]:
    """The rows of one bench script, and what went wrong with it ('' when nothing did)."""
    argv = [sys.executable, str(BENCH / f"{name}.py"), "--json", *(["--smoke"] if smoke else [])]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    try:
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BENCH_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return [], f"timed out after {BENCH_TIMEOUT:g}s"
    rows = [Row.from_json(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return rows, tail[0]
    if not rows:
        return rows, "no rows"
    return rows, ""


def header(smoke: bool) -> str:
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    cpus = len(os.sched_getaffinity(0))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    kind = "smoke run: tiny sizes, the figures mean nothing" if smoke else "full run"
    return (
        f"# rrd benchmarks\n\n{when}, rrd {commit or '?'}, Python {platform.python_version()}, "
        f"{cpus} CPUs, {platform.machine()}; {kind}. Each figure is the median (min-max) over "
        "repeated runs; every comparison was measured in the same run. "
        "`make bench` writes this file.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--output", type=Path, default=BENCH / "results.md")
    parser.add_argument("--no-peers", action="store_true", help="do not install the peers")
    args = parser.parse_args()
    if not args.no_peers:
        import peers

        try:
            peers.install()
        except Exception as exc:  # the table goes on without them, saying so
            print(f"bench: the peers could not be installed: {exc}", file=sys.stderr)
    rows: list[Row] = []
    failures: list[str] = []
    for name in args.only:
        began = time.monotonic()
        print(f"bench: {SECTIONS[name]} ...", file=sys.stderr, flush=True)
        found, error = run_one(name, args.smoke)
        rows += found
        took = time.monotonic() - began
        if error:
            failures.append(f"- {SECTIONS[name]} ({name}.py): {error}")
        print(f"bench: {SECTIONS[name]}: {len(found)} rows in {took:.0f}s", file=sys.stderr)
    text = header(args.smoke) + "\n" + markdown(rows) + "\n"
    if failures:
        text += "\nBenches that failed:\n" + "\n".join(failures) + "\n"
    missed = [row for row in rows if row.met is False]
    if missed:
        text += "\nTargets missed: " + "; ".join(f"{r.bench}: {r.figure}" for r in missed) + "\n"
    args.output.write_text(text)
    print(text)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
