"""rrd serve reloading: SIGHUP replaces every worker rolling, a saved config applies the least,
a broken one is refused while the old keeps running, and a swapped symlink is followed."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from tests.helpers import wait_until
from tests.system.conftest import config
from tests.system.test_serve import read_ticks


def save(path: Path, text: str) -> float:
    """An editor's atomic save: a new file beside it, renamed over it. Returns when (monotonic)."""
    temporary = path.with_name(f".{path.name}.swp")
    temporary.write_text(text)
    os.replace(temporary, path)
    return time.monotonic()


def live_workers(daemon: Any) -> set[int]:
    started = {e["worker_pid"] for e in daemon.events("worker.started")}
    return started - {e["worker_pid"] for e in daemon.events("worker.exited")}


def gaps_after(ticks: list[dict[str, Any]], moment: float) -> list[float]:
    arrivals = [t["arrival"] for t in ticks if t["arrival"] > moment]
    return [b - a for a, b in itertools.pairwise(arrivals)]


def test_sighup_replaces_every_worker_and_misses_at_most_one_tick(rrd: Any, tmp_path: Path) -> None:
    ticks = tmp_path / "ticks.jsonl"
    daemon = rrd(config(interval="100ms", workers=2), env={"TICK_LOG": str(ticks)})
    daemon.wait_event("daemon.ready")
    before = live_workers(daemon)
    wait_until(lambda: len(read_ticks(ticks)) >= 3)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("pool.reset_done")
    after = wait_until(lambda: (live := live_workers(daemon)) and len(live) == 2 and live)
    assert not after & before
    wait_until(lambda: len(read_ticks(ticks)) >= 20)
    assert daemon.stop() == 0
    stats = daemon.events("ticker.stopped")[0]
    missed = stats["failed"] + stats["skipped"]
    assert missed <= 1, stats
    (reloaded,) = daemon.events("config.reloaded")
    assert reloaded["source"] == "SIGHUP" and reloaded["changes"] == []


def test_an_atomic_save_of_a_new_interval_retimes_the_ticker_within_a_second(
    rrd: Any, tmp_path: Path
) -> None:
    ticks = tmp_path / "ticks.jsonl"
    daemon = rrd(config(interval="300ms", workers=2), env={"TICK_LOG": str(ticks)})
    daemon.wait_event("daemon.ready")
    workers = live_workers(daemon)
    wait_until(lambda: len(read_ticks(ticks)) >= 2)
    saved = save(tmp_path / ".rr.yaml", config(interval="50ms", workers=2))
    (reloaded,) = daemon.wait_event("config.reloaded")
    assert (
        reloaded["changes"] == ["ticker.interval: 300ms -> 50ms"] and reloaded["source"] == "file"
    )
    wait_until(lambda: len([g for g in gaps_after(read_ticks(ticks), saved) if g < 0.1]) >= 5)
    first_fast = next(
        t["arrival"]
        for t, u in zip(read_ticks(ticks), read_ticks(ticks)[1:], strict=False)
        if t["arrival"] > saved and u["arrival"] - t["arrival"] < 0.1
    )
    assert first_fast - saved < 1.0
    assert live_workers(daemon) == workers  # no worker restarted
    assert daemon.stop() == 0


def test_a_broken_save_is_refused_and_the_old_interval_goes_on(rrd: Any, tmp_path: Path) -> None:
    ticks = tmp_path / "ticks.jsonl"
    daemon = rrd(config(interval="100ms"), env={"TICK_LOG": str(ticks)})
    daemon.wait_event("daemon.ready")
    saved = save(tmp_path / ".rr.yaml", config(interval="100ms").replace("100ms", "fast"))
    (rejected,) = daemon.wait_event("config.rejected")
    assert rejected["error"].startswith(f"{tmp_path / '.rr.yaml'}:9: ticker.interval: ")
    assert 'bad duration "fast"' in rejected["error"] and "\n" not in rejected["error"]
    wait_until(lambda: len(gaps_after(read_ticks(ticks), saved)) >= 8)
    assert all(0.05 < g < 0.2 for g in gaps_after(read_ticks(ticks), saved))
    assert daemon.process.poll() is None
    assert daemon.stop() == 0


def test_num_workers_two_four_one_scales_the_pool(rrd: Any, tmp_path: Path) -> None:
    daemon = rrd(config(interval="100ms", workers=2), env={"TICK_LOG": str(tmp_path / "t")})
    daemon.wait_event("daemon.ready")
    first = live_workers(daemon)
    save(tmp_path / ".rr.yaml", config(interval="100ms", workers=4))
    wait_until(lambda: len(live_workers(daemon)) == 4)
    assert first <= live_workers(daemon)  # the two that ran go on
    save(tmp_path / ".rr.yaml", config(interval="100ms", workers=1))
    wait_until(lambda: len(live_workers(daemon)) == 1)
    reloads = [r["changes"] for r in daemon.events("config.reloaded")]
    assert reloads == [["ticker.pool.num_workers: 2 -> 4"], ["ticker.pool.num_workers: 4 -> 1"]]
    assert daemon.stop() == 0
    assert daemon.events("ticker.stopped")[0]["failed"] == 0


def test_a_swapped_config_symlink_is_followed(rrd: Any, tmp_path: Path) -> None:
    ticks = tmp_path / "ticks.jsonl"
    releases = tmp_path / "releases"
    releases.mkdir()
    (releases / "v1.yaml").write_text(config(interval="300ms"))
    (releases / "v2.yaml").write_text(config(interval="50ms"))
    link = tmp_path / "current.yaml"
    link.symlink_to(releases / "v1.yaml")
    daemon = rrd("", "-c", str(link), env={"TICK_LOG": str(ticks)}, config_file=None)
    daemon.wait_event("daemon.ready")
    swap = tmp_path / "current.yaml.new"
    swap.symlink_to(releases / "v2.yaml")
    os.replace(swap, link)
    (reloaded,) = daemon.wait_event("config.reloaded")
    assert reloaded["changes"] == ["ticker.interval: 300ms -> 50ms"]
    (releases / "v2.yaml").write_text(config(interval="100ms"))  # the new target, in place
    wait_until(lambda: len(daemon.events("config.reloaded")) == 2)
    assert daemon.events("config.reloaded")[1]["changes"] == ["ticker.interval: 50ms -> 100ms"]
    assert daemon.stop() == 0
    assert json.dumps(daemon.events("daemon.stopped"))
