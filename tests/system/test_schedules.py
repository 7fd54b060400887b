"""`rrd serve` with named schedules: three of them on one pool (an interval, a cron with
seconds, a nightly job), `rrd ticker list|pause|resume|run` from a shell, the ledger per
schedule, a reload that adds, changes and removes schedules, and lastTick and catch_up across a
real restart."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.helpers import ROOT, wait_until
from tests.system.conftest import config, operator
from tests.system.test_reload import save

SCHEDULES = """  schedules:
    fast:
      interval: 200ms
      payload: '{"job": "fast"}'
    seconds:
      cron: "* * * * * */1"
      timezone: UTC
    nightly:
      cron: "0 3 * * *"
      timezone: Europe/Berlin
"""


def with_schedules(schedules: str = SCHEDULES, *, interval: bool = False, extra: str = "") -> str:
    """The tick recorder's config, its ticker with `schedules` (and `interval` only if asked)."""
    text = config(workers=2, extra=extra)
    if not interval:
        text = text.replace("  interval: 100ms\n", "")
    return text.replace("  exec_timeout: 5s\n", "  exec_timeout: 5s\n" + schedules)


def arrivals(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "ticks.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [{**line, "context": json.loads(line["context"])} for line in lines]


def by_schedule(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    return [a for a in arrivals(tmp_path) if a["context"].get("schedule") == name]


def status(tmp_path: Path) -> dict[str, Any]:
    done = operator(tmp_path)("status", "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def serve(rrd: Any, tmp_path: Path, text: str, **env: str) -> Any:
    daemon = rrd(
        text,
        "--pidfile",
        str(tmp_path / "rrd.pid"),
        env={"TICK_LOG": str(tmp_path / "ticks.jsonl"), **env},
    )
    daemon.wait_event("daemon.ready")
    return daemon


def test_three_schedules_tick_on_one_pool_each_with_its_ledger(rrd: Any, tmp_path: Path) -> None:
    daemon = serve(rrd, tmp_path, with_schedules())
    wait_until(lambda: len(by_schedule(tmp_path, "seconds")) >= 3, timeout=15)
    fast = by_schedule(tmp_path, "fast")
    assert len(fast) >= 5
    assert json.loads(fast[0]["body"]) == {"tick": 0, "job": "fast"}
    assert set(fast[0]["context"]) == {"lastTick", "k", "schedule"}
    assert all(a["mode"] == "ticker" for a in arrivals(tmp_path))
    assert not by_schedule(tmp_path, "nightly") and not by_schedule(tmp_path, "default")
    schedules = status(tmp_path)["plugins"]["ticker"]["schedules"]
    assert list(schedules) == ["fast", "seconds", "nightly"]
    for schedule in schedules.values():
        ticks = schedule["ticks"]
        assert ticks["due"] == (
            ticks["delivered"] + ticks["failed"] + ticks["skipped"] + ticks["in_flight"]
        )
    assert schedules["nightly"]["cron"].startswith("0 3 * * *")
    assert schedules["nightly"]["next_due"] > time.time()
    shown = operator(tmp_path)("status")
    assert shown.returncode == 0, shown.stderr
    assert "schedule nightly (0 3 * * * in Europe/Berlin): next in " in shown.stdout, shown.stdout
    listed = operator(tmp_path)("ticker", "list")
    assert listed.returncode == 0, listed.stderr
    assert all(name in listed.stdout for name in ("fast", "seconds", "nightly")), listed.stdout
    assert daemon.stop() == 0
    (stopped,) = daemon.events("ticker.stopped")
    assert set(stopped["schedules"]) == {"fast", "seconds", "nightly"}
    assert stopped["due"] == sum(s["due"] for s in stopped["schedules"].values())


def test_pause_resume_and_run_from_the_shell(rrd: Any, tmp_path: Path) -> None:
    daemon = serve(rrd, tmp_path, with_schedules())
    ctl = operator(tmp_path)
    wait_until(lambda: len(by_schedule(tmp_path, "fast")) >= 2)
    paused = ctl("ticker", "pause", "fast")
    assert (paused.returncode, paused.stdout.strip()) == (0, "fast: paused"), paused.stderr
    wait_until(lambda: status(tmp_path)["plugins"]["ticker"]["schedules"]["fast"]["paused"])
    count = len(by_schedule(tmp_path, "fast"))
    wait_until(
        lambda: (
            status(tmp_path)["plugins"]["ticker"]["schedules"]["fast"]["ticks"]["skipped_by"].get(
                "paused", 0
            )
            >= 3
        )
    )
    assert len(by_schedule(tmp_path, "fast")) <= count + 1  # one may have been in flight
    ran = ctl("ticker", "run", "nightly")
    assert (ran.returncode, ran.stdout.strip()) == (0, "nightly: a tick sent"), ran.stderr
    wait_until(lambda: len(by_schedule(tmp_path, "nightly")) == 1)
    nightly = status(tmp_path)["plugins"]["ticker"]["schedules"]["nightly"]["ticks"]
    assert nightly["manual"] == 1 and nightly["due"] == 1
    assert ctl("ticker", "resume", "fast").stdout.strip() == "fast: resumed"
    wait_until(lambda: len(by_schedule(tmp_path, "fast")) >= count + 3)
    unknown = ctl("ticker", "pause", "nope")
    assert unknown.returncode != 0 and "no schedule 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    assert daemon.stop() == 0


def test_a_reload_adds_retimes_and_removes_schedules(rrd: Any, tmp_path: Path) -> None:
    daemon = serve(rrd, tmp_path, with_schedules())
    wait_until(lambda: len(by_schedule(tmp_path, "fast")) >= 2)
    changed = SCHEDULES.replace("interval: 200ms", "interval: 100ms").replace(
        '    nightly:\n      cron: "0 3 * * *"\n      timezone: Europe/Berlin\n',
        "    added:\n      interval: 150ms\n",
    )
    save(tmp_path / ".rr.yaml", with_schedules(changed))
    daemon.wait_event("config.reloaded")
    wait_until(lambda: len(by_schedule(tmp_path, "added")) >= 2)
    schedules = status(tmp_path)["plugins"]["ticker"]["schedules"]
    assert list(schedules) == ["fast", "seconds", "added"]
    assert schedules["fast"]["interval_s"] == 0.1
    ticks = [json.loads(a["body"])["tick"] for a in by_schedule(tmp_path, "fast")]
    assert ticks == list(range(len(ticks)))  # the tick numbers went on
    broken = with_schedules(SCHEDULES.replace("* * * * * */1", "* * * * * 99"))
    save(tmp_path / ".rr.yaml", broken)
    (rejected,) = daemon.wait_event("config.rejected")
    assert "ticker.schedules.seconds.cron" in rejected["error"]
    assert list(status(tmp_path)["plugins"]["ticker"]["schedules"]) == ["fast", "seconds", "added"]
    assert daemon.stop() == 0
    (stopped,) = daemon.events("ticker.stopped")
    assert stopped["due"] == (
        stopped["delivered"] + stopped["failed"] + stopped["skipped"] + stopped["in_flight"]
    )


def test_last_tick_and_catch_up_survive_a_restart(rrd: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    schedules = f"""  state_dir: "{state}"
  schedules:
    slow:
      interval: 1s
      catch_up: once
"""
    daemon = serve(rrd, tmp_path, with_schedules(schedules))
    wait_until(lambda: len(by_schedule(tmp_path, "slow")) >= 2, timeout=15)
    assert daemon.stop() == 0
    kept = json.loads((state / "ticker.json").read_text())
    last = kept["schedules"]["slow"]["last_tick"]
    assert abs(last - time.time()) < 5
    last -= 3  # as if rrd had been down for 3 s: a tick of `slow` fell due meanwhile
    kept["schedules"]["slow"]["last_tick"] = last
    (state / "ticker.json").write_text(json.dumps(kept))
    before = len(by_schedule(tmp_path, "slow"))
    began = time.monotonic()
    again = serve(rrd, tmp_path, with_schedules(schedules))
    wait_until(lambda: len(by_schedule(tmp_path, "slow")) > before, timeout=15)
    caught = by_schedule(tmp_path, "slow")[before]
    assert caught["context"]["lastTick"] == int(last)  # true after the restart
    assert caught["arrival"] - began < 1.0  # sent at start, not a second later
    assert again.events("ticker.catch_up")
    assert again.stop() == 0


def test_config_check_names_a_bad_cron_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / ".rr.yaml"
    path.write_text(with_schedules(SCHEDULES.replace('"0 3 * * *"', '"0 25 * * *"')))
    done = subprocess.run(
        [sys.executable, "-m", "rrd", "config", "check", "-c", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78
    assert f"{path}:" in done.stderr and "ticker.schedules.nightly.cron" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
