"""The operator's commands and the control socket, against a running rrd serve."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from rrd.protocol.frame import Decoder, Flag
from rrd.protocol.rpc import RpcError, decode_reply, encode_request, parse_reply
from tests.helpers import wait_until
from tests.system.test_reload import live_workers
from tests.system.test_serve import read_ticks


def test_workers_json_lists_each_pools_workers(served: tuple[Any, Any]) -> None:
    daemon, ctl = served
    result = ctl("workers", "--json")
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert list(table) == ["ticker"] and len(table["ticker"]) == 2
    for worker in table["ticker"]:
        assert set(worker) == {"pid", "status", "execs", "memory", "cpu", "created"}
        assert isinstance(worker["pid"], int) and worker["status"] in ("ready", "working")
        assert isinstance(worker["execs"], int) and worker["memory"] > 1_000_000
        assert isinstance(worker["cpu"], float) and abs(worker["created"] - time.time()) < 60
    assert {w["pid"] for w in table["ticker"]} == live_workers(daemon)
    human = ctl("workers")
    assert "PID" in human.stdout and "CREATED" in human.stdout and "ago" in human.stdout


def test_reset_and_reload_replace_every_worker(served: tuple[Any, Any]) -> None:
    daemon, ctl = served
    before = live_workers(daemon)
    assert ctl("reset").returncode == 0
    after_reset = wait_until(lambda: (live := live_workers(daemon)) and len(live) == 2 and live)
    assert not after_reset & before
    reloaded = ctl("reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert (
        reloaded.stdout.startswith("reloaded in ") and "no change to the config" in reloaded.stdout
    )
    after_reload = wait_until(lambda: (live := live_workers(daemon)) and len(live) == 2 and live)
    assert not after_reload & after_reset
    assert daemon.stop() == 0
    assert daemon.events("ticker.stopped")[0]["failed"] == 0


def test_reload_of_a_broken_config_exits_78_and_rrd_keeps_the_old(
    served: tuple[Any, Any], tmp_path: Path
) -> None:
    _, ctl = served
    path = tmp_path / ".rr.yaml"
    good = path.read_text()
    path.write_text(good.replace("50ms", "soon"))
    result = ctl("reload")
    assert result.returncode == 78
    assert result.stderr.strip().splitlines()[-1].startswith("rrd: config rejected")
    path.write_text(good)
    assert ctl("status").returncode == 0


def test_scale_up_then_down_loses_no_payload(served: tuple[Any, Any], tmp_path: Path) -> None:
    daemon, ctl = served
    up = ctl("scale", "ticker", "+2")
    assert up.returncode == 0 and up.stdout.strip() == "ticker: 2 -> 4 workers"
    wait_until(lambda: len(live_workers(daemon)) == 4)
    down = ctl("scale", "ticker", "1")
    assert down.returncode == 0 and down.stdout.strip() == "ticker: 4 -> 1 workers"
    wait_until(lambda: len(live_workers(daemon)) == 1)
    ticks = len(read_ticks(tmp_path / "ticks.jsonl"))
    wait_until(lambda: len(read_ticks(tmp_path / "ticks.jsonl")) > ticks + 10)
    assert ctl("scale", "ticker", "0").returncode == 70
    assert daemon.stop() == 0
    stats = daemon.events("ticker.stopped")[0]
    assert stats["failed"] == 0 and stats["in_flight"] == 0
    assert stats["due"] == stats["delivered"] + stats["skipped"]
    retired = [e for e in daemon.events("worker.exited") if e["reason"] == "scale_down"]
    assert len(retired) == 3 and all(e["exit_code"] == 0 for e in retired)


def test_status_says_how_each_pool_is(served: tuple[Any, Any]) -> None:
    daemon, ctl = served
    report = json.loads(ctl("status", "--json").stdout)
    assert report["pid"] == daemon.process.pid and report["state"] == "running"
    ticker = report["plugins"]["ticker"]
    assert ticker["pool"]["state"] == "up" and ticker["pool"]["size"] == 2
    assert ticker["ticks"]["due"] >= 1 and ticker["interval_s"] == 0.05
    assert report["config"].endswith(".rr.yaml") and report["config_loaded_at"] <= time.time()
    human = ctl("status").stdout
    assert "ticker: up, " in human and "ticks due" in human


def test_stop_waits_until_rrd_has_exited(served: tuple[Any, Any]) -> None:
    daemon, ctl = served
    result = ctl("stop")
    assert result.returncode == 0 and result.stdout.startswith("stopped rrd ")
    assert daemon.process.poll() == 0
    gone = ctl("status")
    assert gone.returncode == 69 and "no rrd answers" in gone.stderr


def test_the_control_socket_is_0600_and_answers_garbage_with_an_error(
    served: tuple[Any, Any], tmp_path: Path
) -> None:
    _, ctl = served
    path = tmp_path / "rrd.sock"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for garbage in (b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 12, os.urandom(64)):
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(str(path))
            client.sendall(garbage)
            frames = read_frames(client)
            with pytest.raises(RpcError, match="bad frame"):
                parse_reply(frames[0])
    ticks = len(read_ticks(tmp_path / "ticks.jsonl"))
    wait_until(lambda: len(read_ticks(tmp_path / "ticks.jsonl")) > ticks + 5)  # still ticking
    assert ctl("status").returncode == 0


def test_phps_rpc_client_bytes_get_informer_workers(
    served: tuple[Any, Any], tmp_path: Path
) -> None:
    """The exact frame spiral/goridge's RPC client sends for informer.Workers("ticker")."""
    daemon, _ = served
    call = bytes.fromhex("15 08 18 00 00 00 3a 06 04 47 00 00 01 00 00 00 10 00 00 00")
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(str(tmp_path / "rrd.sock"))
        client.sendall(call + b'informer.Workers"ticker"')
        (reply, *_) = read_frames(client)
        assert reply.flags == Flag.CODEC_JSON and reply.options[0] == 1
        workers = decode_reply(reply, seq=1)["workers"]
        assert {w["pid"] for w in workers} == live_workers(daemon)
        assert all(
            w["statusStr"] in ("ready", "working") and w["status"] in (1, 2) for w in workers
        )
        client.sendall(encode_request(2, "rrd.Nothing", "x").encode())
        (unknown, *_) = read_frames(client)
        with pytest.raises(RpcError, match=r"unknown method 'rrd\.Nothing'"):
            parse_reply(unknown)


def read_frames(client: socket.socket) -> list[Any]:
    decoder = Decoder()
    while True:
        chunk = client.recv(65536)
        assert chunk, "rrd closed the connection without a reply"
        frames = decoder.feed(chunk)
        if frames:
            return frames


def test_a_stuck_client_blocks_no_other(served: tuple[Any, Any], tmp_path: Path) -> None:
    """One client sends half a call and goes silent; another sends 200 calls and never reads
    the replies: a third still gets its answers, and rrd still ticks."""
    _, ctl = served
    path = str(tmp_path / "rrd.sock")
    stuck, silent = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
    try:
        stuck.connect(path)
        stuck.sendall(encode_request(1, "rrd.Status", None).encode()[:15])
        silent.connect(path)
        for n in range(200):  # calls whose replies it never reads
            silent.sendall(encode_request(n, "rrd.Status", None).encode())
        for _ in range(3):
            assert ctl("status", "--json").returncode == 0
    finally:
        stuck.close()
        silent.close()
    ticks = len(read_ticks(tmp_path / "ticks.jsonl"))
    wait_until(lambda: len(read_ticks(tmp_path / "ticks.jsonl")) > ticks + 5)
