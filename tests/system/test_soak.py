"""The chaos soak for 30 seconds (bench/soak.py; `make soak` runs it for 10 minutes): rrd at a
5 ms tick with workers that crash, hang, write garbage, fail, retire and leak, while a driver
signals, rewrites, scales, resets and pokes it. rrd must come out whole."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from bench.soak import Soak, table


@pytest.mark.timeout(300)
def test_thirty_seconds_of_chaos_leave_rrd_whole(tmp_path: Path) -> None:
    seed = int(os.environ.get("SOAK_SEED") or random.randrange(2**32))
    soak = Soak(tmp_path, 30, seed=seed)
    figures = soak.run()
    report = f"seed {seed} (SOAK_SEED={seed} replays it)\n{table(figures, soak)}"
    failed = [f"{name}: {detail}" for name, ok, detail in figures.checks if not ok]
    assert len(figures.checks) == 8 and not failed, "\n".join(failed) + "\n\n" + report
    # the chaos was real: every kind of fault and operator move happened, and was survived
    assert figures.ledger["failed"] > 0 and figures.ledger["delivered"] > 1000, report
    assert figures.events["worker.killed"] > 0 and figures.events["config.rejected"] > 0, report
    assert figures.events["config.reloaded"] > 5 and figures.actions["SIGHUP"] > 0, report
    assert figures.actions["rrd scale"] > 0 and figures.actions["hostile connection"] > 0, report
    assert figures.actions["probes and a scrape"] > 0, report
