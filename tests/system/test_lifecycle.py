"""rrd serve around its workers: on_init, pidfile, dotenv, hung workers, and rrd's own death."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tests.helpers import pid_alive, wait_until
from tests.system.conftest import config
from tests.system.test_serve import read_ticks


def on_init(code: str, exit_on_error: bool) -> str:
    return f"""  on_init:
    command: ["{sys.executable}", "-c", "{code}"]
    exec_timeout: 10s
    exit_on_error: {str(exit_on_error).lower()}
"""


def with_server_extra(text: str, extra: str) -> str:
    return text.replace("logs:\n", extra + "logs:\n", 1)


def test_on_init_runs_once_before_any_worker(rrd: Any, tmp_path: Path) -> None:
    mark = tmp_path / "init-ran"
    code = f"open('{mark}', 'a').write('x'); print('initialised')"
    text = with_server_extra(config(), on_init(code, exit_on_error=True))
    daemon = rrd(text, env={"TICK_LOG": str(tmp_path / "t")})
    daemon.wait_event("ticker.tick")
    assert daemon.stop() == 0
    assert mark.read_text() == "x"
    events = [r["event"] for r in daemon.records]
    assert events.index("server.on_init.done") < events.index("worker.started")
    assert daemon.events("server.on_init.output")[0]["msg"] == "initialised"


def test_on_init_failure_stops_rrd_only_with_exit_on_error(rrd: Any, tmp_path: Path) -> None:
    failing = with_server_extra(config(), on_init("import sys; sys.exit(2)", exit_on_error=True))
    daemon = rrd(failing)
    assert daemon.wait(timeout=30) == 69
    (failed,) = daemon.events("daemon.failed")
    assert "server.on_init" in failed["msg"] and "exit code 2" in failed["msg"]
    assert not daemon.events("worker.started")

    tolerated = with_server_extra(config(), on_init("import sys; sys.exit(2)", exit_on_error=False))
    daemon = rrd(tolerated, env={"TICK_LOG": str(tmp_path / "t")})
    daemon.wait_event("ticker.tick")
    assert daemon.stop() == 0
    assert daemon.events("server.on_init.failed")


def test_pidfile_lives_as_long_as_rrd(rrd: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "run" / "rrd.pid"
    pidfile.parent.mkdir()
    daemon = rrd(config(), "--pidfile", str(pidfile), env={"TICK_LOG": str(tmp_path / "t")})
    daemon.wait_event("daemon.ready")
    assert pidfile.read_text() == f"{daemon.process.pid}\n"
    assert daemon.stop() == 0
    assert not pidfile.exists()


def test_dotenv_and_server_env_reach_the_workers(rrd: Any, tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# app settings\nexport APP_NAME='demo app'\nSECRET=s3cret\n")
    log = tmp_path / "ticks.jsonl"
    text = config(env='greeting: "hello ${APP_NAME}"')
    daemon = rrd(
        text,
        "--dotenv",
        str(dotenv),
        env={
            "TICK_LOG": str(log),
            "RECORD_ENV": "GREETING,SECRET,RR_RELAY,RR_VERSION,NOTIFY_SOCKET",
            "NOTIFY_SOCKET": "/run/not-for-workers",
        },
    )
    wait_until(lambda: read_ticks(log), timeout=15)
    assert daemon.stop() == 0
    env = read_ticks(log)[0]["env"]
    assert env["GREETING"] == "hello demo app" and env["SECRET"] == "s3cret"
    assert env["RR_RELAY"] == "pipes" and env["RR_VERSION"]
    assert env["NOTIFY_SOCKET"] is None


def test_a_hung_worker_is_killed_at_exec_timeout_and_the_clock_goes_on(
    rrd: Any, tmp_path: Path
) -> None:
    log = tmp_path / "ticks.jsonl"
    text = config(interval="100ms").replace("exec_timeout: 5s", "exec_timeout: 300ms")
    daemon = rrd(text, env={"TICK_LOG": str(log), "HANG_ON_TICK": "2"})
    (failed,) = daemon.wait_event("ticker.failed")
    assert failed["reason"] == "timeout" and failed["tick"] == 2
    wait_until(lambda: len({t["pid"] for t in read_ticks(log)}) == 2, timeout=15)
    assert daemon.stop() == 0
    ticks = [json.loads(t["body"])["tick"] for t in read_ticks(log)]
    assert ticks == list(range(len(ticks))) and len(ticks) > 3
    stats = daemon.events("ticker.stopped")[0]
    assert stats["failed"] == 1 and stats["skipped_by"]["busy"] >= 2  # ticks due while it hung
    assert not pid_alive(failed["worker_pid"])


def test_workers_die_with_rrd_even_when_rrd_is_killed(rrd: Any, tmp_path: Path) -> None:
    daemon = rrd(config(workers=3), env={"TICK_LOG": str(tmp_path / "t")})
    workers = [e["worker_pid"] for e in daemon.wait_event("worker.started", count=3)]
    daemon.wait_event("daemon.ready")
    os.kill(daemon.process.pid, signal.SIGKILL)
    daemon.wait()
    wait_until(lambda: not any(pid_alive(pid) for pid in workers), timeout=10)


def test_sigusr1_reopens_a_log_file_that_logrotate_moved(rrd: Any, tmp_path: Path) -> None:
    logfile = tmp_path / "rrd.log"
    logs = f"  level: debug\n  output: {logfile}"
    text = config(interval="100ms").replace("  level: debug", logs)
    daemon = rrd(text, env={"TICK_LOG": str(tmp_path / "t")})
    wait_until(lambda: logfile.exists() and '"ticker.tick"' in logfile.read_text())
    logfile.rename(tmp_path / "rrd.log.1")
    daemon.signal(signal.SIGUSR1)
    wait_until(lambda: logfile.exists() and '"ticker.tick"' in logfile.read_text())
    assert daemon.stop() == 0
    rotated = [json.loads(line) for line in (tmp_path / "rrd.log.1").read_text().splitlines()]
    fresh = [json.loads(line) for line in logfile.read_text().splitlines()]
    assert rotated[0]["event"] == "config.warning" or rotated[0]["ts"] <= fresh[0]["ts"]
    assert fresh[-1]["event"] == "daemon.stopped"
    assert any(r["event"] == "daemon.signal" and r["signal"] == "SIGUSR1" for r in rotated + fresh)


def test_rrd_exits_without_a_word_outside_its_json_lines(rrd: Any, tmp_path: Path) -> None:
    """Every transport is closed when its process is reaped: no `Exception ignored in
    BaseSubprocessTransport.__del__` at exit, from workers or from on_init."""
    text = with_server_extra(config(workers=2), on_init("print('ready')", exit_on_error=True))
    daemon = rrd(text, env={"TICK_LOG": str(tmp_path / "t")})
    daemon.wait_event("ticker.tick")
    assert daemon.stop() == 0
    for line in daemon.lines:
        assert json.loads(line)["event"], line
    assert not [line for line in daemon.lines if "Exception ignored" in line]
