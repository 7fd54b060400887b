"""Reloads on the paths between features, against a running rrd serve: a plugin's section
removed and restored, keys that need a restart changed and changed back, operator mistakes
(`rrd scale` with a count that is no count or too many), `rrd stop` twice, and the tick ledger
balancing through all of it. Each broke on c77a251 (rrd exited 70, or did the wrong thing)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.helpers import ROOT, wait_until
from tests.system.conftest import config, operator
from tests.system.test_reload import live_workers, save
from tests.system.test_serve import read_ticks


def status(ctl: Any) -> dict[str, Any]:
    result = ctl("status", "--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def balanced(ticks: dict[str, Any]) -> bool:
    parts = ticks["delivered"] + ticks["failed"] + ticks["skipped"] + ticks["in_flight"]
    return bool(ticks["due"] == parts)


def no_bug(daemon: Any) -> None:
    assert not daemon.events("daemon.crashed")
    assert not [r for r in daemon.records if "traceback" in r]


def test_removing_the_ticker_section_stops_it_and_restoring_it_starts_it_again(
    served: tuple[Any, Any], tmp_path: Path
) -> None:
    daemon, ctl = served
    path, text = tmp_path / ".rr.yaml", (tmp_path / ".rr.yaml").read_text()
    head, _, _ = text.partition("ticker:")
    first = live_workers(daemon)
    wait_until(lambda: read_ticks(tmp_path / "ticks.jsonl"))  # a save settles in 10 ms
    save(path, head)
    daemon.wait_event("ticker.stopped")
    wait_until(lambda: not live_workers(daemon))
    wait_until(lambda: "ticker" not in status(ctl)["plugins"])
    daemon.signal(signal.SIGHUP)  # a reset with no plugin to reset
    daemon.wait_event("config.reloaded", 2)
    (stopped,) = daemon.events("ticker.stopped")
    assert balanced(stopped) and stopped["in_flight"] == 0 and stopped["delivered"] > 0
    ticks = len(read_ticks(tmp_path / "ticks.jsonl"))
    save(path, text)
    daemon.wait_event("ticker.started", 2)
    wait_until(lambda: len(live_workers(daemon)) == 2)
    assert not live_workers(daemon) & first
    wait_until(lambda: len(read_ticks(tmp_path / "ticks.jsonl")) > ticks + 5)
    report = status(ctl)["plugins"]["ticker"]
    assert report["pool"]["size"] == 2 and balanced(report["ticks"])
    assert daemon.stop() == 0
    no_bug(daemon)


def test_a_key_that_needs_a_restart_reaches_no_new_worker_and_clears_when_it_goes_back(
    rrd: Any, tmp_path: Path
) -> None:
    ticks = tmp_path / "ticks.jsonl"
    old, new = f"unix://{tmp_path}/old.sock", f"unix://{tmp_path}/new.sock"
    text = config(interval="50ms", extra=f'rpc:\n  listen: "{old}"\n')
    daemon = rrd(text, env={"TICK_LOG": str(ticks), "RECORD_ENV": "RR_RPC"})
    daemon.wait_event("daemon.ready")
    path = tmp_path / ".rr.yaml"
    save(path, text.replace(old, new))
    (reloaded,) = daemon.wait_event("config.reloaded")
    (needed,) = reloaded["restart_needed"]
    assert needed.startswith("rpc.listen: ")
    before = live_workers(daemon)
    daemon.signal(signal.SIGHUP)  # every worker is replaced: the new ones still get the old address
    daemon.wait_event("pool.reset_done")
    after = wait_until(lambda: (live := live_workers(daemon) - before) and live)
    wait_until(lambda: any(t["pid"] in after for t in read_ticks(ticks)))
    seen = {t["env"]["RR_RPC"] for t in read_ticks(ticks) if t["pid"] in after}
    assert seen == {old}
    save(path, text)  # back as it started: nothing needs a restart any more
    reloads = daemon.wait_event("config.reloaded", 3)
    assert reloads[-1]["restart_needed"] == []
    assert daemon.stop() == 0
    no_bug(daemon)


def test_scale_refuses_what_is_no_count_or_too_many_and_rrd_goes_on(
    served: tuple[Any, Any],
) -> None:
    """On c77a251 a superscript two passed str.isdigit and int() raised: rrd exited 70; and
    nothing bounded a count: 100000 forked away."""
    daemon, ctl = served
    for count in ("²", "٣", "1e3", "+", "-+1", " 2", "0x10", "100000", "+300"):
        result = ctl("scale", "ticker", count)
        assert result.returncode == 70, (count, result)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert daemon.process.poll() is None
    assert status(ctl)["plugins"]["ticker"]["pool"]["size"] == 2
    assert len(live_workers(daemon)) == 2
    assert ctl("scale", "ticker", "+1").returncode == 0
    wait_until(lambda: len(live_workers(daemon)) == 3)
    no_bug(daemon)


def test_num_workers_past_max_workers_is_refused_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / ".rr.yaml"
    path.write_text(config(workers=300))
    result = subprocess.run(
        [sys.executable, "-m", "rrd", "config", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 78
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "300" in text)
    assert f":{line}: ticker.pool.num_workers: must be at most max_workers (256)" in result.stderr


def test_a_second_graceful_stop_joins_the_first(rrd: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "rrd.pid"
    daemon = rrd(
        config("slow_tick", interval="100ms"), "--pidfile", str(pidfile), env={"TICK_SECONDS": "2"}
    )
    daemon.wait_event("daemon.ready")
    daemon.wait_event("worker.stderr")  # a tick is under way: the stop waits for it
    ctl = operator(tmp_path)
    where = ["-c", str(tmp_path / ".rr.yaml"), "--pidfile", str(pidfile)]
    first = subprocess.Popen(
        [sys.executable, "-m", "rrd", "stop", *where], cwd=ROOT, stdout=subprocess.PIPE
    )
    daemon.wait_event("daemon.stopping")
    second = ctl("stop")
    assert second.returncode == 0 and second.stdout.startswith("stopped rrd")
    assert first.wait(30) == 0
    assert daemon.wait() == 0
    assert daemon.events("daemon.stop_joined") and not daemon.events("daemon.stop_now")
    assert all(e["exit_code"] == 0 for e in daemon.events("worker.exited"))
    assert daemon.events("ticker.stopped")[0]["failed"] == 0


def test_the_ledger_balances_at_every_moment_through_scales_resets_and_reloads(
    served: tuple[Any, Any], tmp_path: Path
) -> None:
    daemon, ctl = served
    path = tmp_path / ".rr.yaml"
    text = path.read_text()
    samples = []
    for step in ("scale +2", "reset", "interval", "scale 1", "reload", "scale 3"):
        if step.startswith("scale"):
            assert ctl("scale", "ticker", step.split()[1]).returncode == 0
        elif step == "reset":
            assert ctl("reset").returncode == 0
        elif step == "reload":
            assert ctl("reload").returncode == 0
        else:
            save(path, text.replace("interval: 50ms", "interval: 30ms"))
        samples.append(status(ctl)["plugins"]["ticker"]["ticks"])
    wait_until(lambda: len(live_workers(daemon)) == 3)
    samples.append(status(ctl)["plugins"]["ticker"]["ticks"])
    assert all(balanced(s) for s in samples), samples
    assert samples[-1]["due"] > samples[0]["due"]
    began = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - began < 10
    (stopped,) = daemon.events("ticker.stopped")
    assert balanced(stopped) and stopped["in_flight"] == 0
    no_bug(daemon)


def test_scale_takes_a_negative_count_as_the_readme_says(served: tuple[Any, Any]) -> None:
    daemon, ctl = served
    result = ctl("scale", "ticker", "-1")
    assert result.returncode == 0 and result.stdout.strip() == "ticker: 2 -> 1 workers"
    wait_until(lambda: len(live_workers(daemon)) == 1)


def test_a_new_command_that_cannot_start_is_said_at_once_and_the_old_workers_serve_on(
    served: tuple[Any, Any], tmp_path: Path
) -> None:
    """On c77a251 the reload waited out reset_timeout (60 s) for successors that never
    started, holding every other request; restoring the file must replace at once."""
    daemon, ctl = served
    path = tmp_path / ".rr.yaml"
    text = path.read_text()
    old = live_workers(daemon)
    broken = text.replace("tick_recorder.py", "no_such_worker.py")
    began = time.monotonic()
    save(path, broken)
    (failed,) = daemon.wait_event("pool.reset_failed")
    daemon.wait_event("config.reloaded")
    assert time.monotonic() - began < 10
    assert "no_such_worker.py" in failed["last_error"] or "exit code" in failed["last_error"]
    ticks = len(read_ticks(tmp_path / "ticks.jsonl"))
    wait_until(lambda: len(read_ticks(tmp_path / "ticks.jsonl")) > ticks + 5)  # old ones serve
    assert live_workers(daemon) == old
    refused = ctl("reset")
    assert refused.returncode == 70 and "fail to start" in refused.stderr
    save(path, text)
    daemon.wait_event("pool.reset_done", timeout=20)
    wait_until(lambda: len(live_workers(daemon)) == 2 and not live_workers(daemon) & old)
    report = status(ctl)["plugins"]["ticker"]
    assert report["pool"]["state"] == "up" and balanced(report["ticks"])
    assert daemon.stop() == 0
    no_bug(daemon)
