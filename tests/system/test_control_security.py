"""Who may talk to rrd, and what rrd trusts: the pidfile, `rrd reload`'s signal, the control
socket's place and both ends' credentials, TCP's limits. Other users are real: tests run as
root and use `setpriv` to act as nobody (uid 65534) or as uid 1000."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rrd.control.address import UnsafeControlPath
from rrd.control.client import ControlClient
from rrd.protocol.frame import Decoder
from rrd.protocol.rpc import RpcError, decode_reply, encode_request, parse_reply
from tests.helpers import ROOT, pid_alive, wait_until
from tests.system.conftest import config

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="acting as other users needs root")
NOBODY = ("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups")
SQUATTER = ("setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups")


def rrd_cli(*args: str, cwd: Path = ROOT, prefix: tuple[str, ...] = (), **env: str) -> Any:
    """`rrd ARGS` as an operator runs it; the completed process."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "rrd", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={**os.environ, **env},
    )


def nobodys_config() -> str:
    """A config that nobody can run: the system's python (the venv's lives under /root)."""
    system = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    return config(env=f"PYTHONPATH: {ROOT}").replace(f'["{sys.executable}"', f'["{system}"')


def read_frames(client: socket.socket) -> list[Any]:
    decoder = Decoder()
    while True:
        chunk = client.recv(65536)
        assert chunk, "rrd closed the connection without a reply"
        if frames := decoder.feed(chunk):
            return frames


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach and write in, sticky as /tmp is (pytest's own
    temporary directories are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="rrd-test-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An innocent process whose pid a pidfile may be made to name."""
    process = subprocess.Popen(["sleep", "300"])
    yield process
    process.kill()
    process.wait()


# -- 6: rrd exits while a control client is still connected ---------------------------------


def test_rrd_exits_promptly_while_a_control_client_stays_connected(
    rrd: Any, tmp_path: Path
) -> None:
    daemon = rrd(config(), "--pidfile", str(tmp_path / "rrd.pid"), env={"TICK_LOG": "/dev/null"})
    daemon.wait_event("daemon.ready")
    with socket.socket(socket.AF_UNIX) as idle, socket.socket(socket.AF_UNIX) as halfway:
        idle.connect(str(tmp_path / "rrd.sock"))
        halfway.connect(str(tmp_path / "rrd.sock"))
        halfway.sendall(encode_request(1, "rrd.Status", None).encode()[:14])
        began = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
        assert time.monotonic() - began < 10
        idle.settimeout(5)
        assert idle.recv(100) == b""  # rrd closed it on its way out


# -- 7: the pidfile ---------------------------------------------------------------------------


def test_a_second_serve_is_refused_and_the_first_keeps_its_pidfile(
    rrd: Any, tmp_path: Path
) -> None:
    pidfile = tmp_path / "rrd.pid"
    first = rrd(config(), "--pidfile", str(pidfile), env={"TICK_LOG": "/dev/null"})
    first.wait_event("daemon.ready")
    second = rrd_cli("serve", "-c", str(tmp_path / ".rr.yaml"), "--pidfile", str(pidfile))
    assert second.returncode == 64
    assert f"rrd {first.process.pid} already runs with the pidfile {pidfile}" in second.stderr
    assert pidfile.read_text() == f"{first.process.pid}\n"
    status = rrd_cli(
        "status", "--json", "-c", str(tmp_path / ".rr.yaml"), "--pidfile", str(pidfile)
    )
    assert json.loads(status.stdout)["pid"] == first.process.pid
    assert first.stop() == 0
    assert not pidfile.exists()


def test_a_symlink_at_the_pidfile_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    (tmp_path / ".rr.yaml").write_text(config())
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    link = tmp_path / "rrd.pid"
    link.symlink_to(target)
    result = rrd_cli("serve", "-c", str(tmp_path / ".rr.yaml"), "--pidfile", str(link))
    assert result.returncode == 64
    assert f"refusing the pidfile {link}: it is a symlink" in result.stderr
    assert target.read_text() == "keep me\n" and link.is_symlink()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rrd")] == []


def test_a_stale_pidfile_is_taken_over(rrd: Any, tmp_path: Path, sleeper: Any) -> None:
    pidfile = tmp_path / "rrd.pid"
    pidfile.write_text(f"{sleeper.pid}\n")  # a live pid, but no rrd holds the file
    daemon = rrd(config(), "--pidfile", str(pidfile), env={"TICK_LOG": "/dev/null"})
    daemon.wait_event("daemon.ready")
    assert pidfile.read_text() == f"{daemon.process.pid}\n"
    assert daemon.stop() == 0
    assert not pidfile.exists() and pid_alive(sleeper.pid)


# -- 8: rrd reload signals rrd and nothing else -----------------------------------------------


def test_reload_never_signals_the_pid_a_pidfile_names(
    rrd: Any, tmp_path: Path, sleeper: Any
) -> None:
    pidfile = tmp_path / "rrd.pid"
    daemon = rrd(config(), "--pidfile", str(pidfile), env={"TICK_LOG": "/dev/null"})
    daemon.wait_event("daemon.ready")
    pidfile.write_text(f"{sleeper.pid}\n")  # someone rewrote it
    result = rrd_cli("reload", "-c", str(tmp_path / ".rr.yaml"), "--pidfile", str(pidfile))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("reloaded in ")
    assert daemon.events("config.reloaded") and pid_alive(sleeper.pid)
    assert sleeper.poll() is None


def test_reload_from_another_cwd_with_a_relative_pidfile(rrd: Any, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / ".rr.yaml").write_text(config())
    where = ("-w", str(tmp_path), "-c", ".rr.yaml", "--pidfile", "run/rrd.pid")
    daemon = rrd("", *where, config_file=None, env={"TICK_LOG": "/dev/null"})
    daemon.wait_event("daemon.ready")
    assert (tmp_path / "run" / "rrd.pid").read_text() == f"{daemon.process.pid}\n"
    result = rrd_cli("reload", *where, cwd=Path("/"))
    assert result.returncode == 0, result.stderr
    assert daemon.events("config.reloaded")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tcp_config(port: int, extra: str = "") -> str:
    return config(extra=f"rpc:\n  listen: tcp://127.0.0.1:{port}\n{extra}")


def test_reload_over_tcp_signals_only_a_checked_pidfile(
    rrd: Any, tmp_path: Path, sleeper: Any
) -> None:
    pidfile = tmp_path / "rrd.pid"
    daemon = rrd(tcp_config(free_port()), "--pidfile", str(pidfile), env={"TICK_LOG": "/dev/null"})
    daemon.wait_event("daemon.ready")
    where = ("-c", str(tmp_path / ".rr.yaml"))
    without = rrd_cli("reload", *where)
    assert without.returncode == 70
    assert "is TCP, which cannot name the process that serves it" in without.stderr
    pidfile.write_text(f"{sleeper.pid}\n")
    lied = rrd_cli("reload", *where, "--pidfile", str(pidfile))
    assert lied.returncode == 70 and "no signal sent" in lied.stderr
    assert f"pid {sleeper.pid} is not `rrd serve`" in lied.stderr
    assert sleeper.poll() is None and not daemon.events("config.reloaded")
    pidfile.write_text(f"{daemon.process.pid}\n")
    honest = rrd_cli("reload", *where, "--pidfile", str(pidfile))
    assert honest.returncode == 0, honest.stderr
    assert daemon.events("config.reloaded")


# -- TCP: loopback and read-only by default ---------------------------------------------------


def test_tcp_serves_only_read_only_methods(rrd: Any, tmp_path: Path) -> None:
    port = free_port()
    daemon = rrd(tcp_config(port), env={"TICK_LOG": "/dev/null"})
    daemon.wait_event("daemon.ready")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(encode_request(1, "rrd.Status", None).encode())
        assert decode_reply(read_frames(client)[0], seq=1)["pid"] == daemon.process.pid
        for seq, method in enumerate(("rrd.Stop", "rrd.Reset", "informer.AddWorker"), 2):
            client.sendall(encode_request(seq, method, None).encode())
            with pytest.raises(RpcError, match=f"{method} needs a unix socket or rpc.tcp_write"):
                parse_reply(read_frames(client)[0], seq=seq)
    stop = rrd_cli("stop", "-c", str(tmp_path / ".rr.yaml"))
    assert stop.returncode == 70 and "rrd.Stop needs a unix socket" in stop.stderr
    assert daemon.process.poll() is None
    assert daemon.stop() == 0


def test_a_listen_address_beyond_loopback_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / ".rr.yaml"
    path.write_text(config(extra="rpc:\n  listen: tcp://0.0.0.0:6001\n"))
    line = path.read_text().splitlines().index("  listen: tcp://0.0.0.0:6001") + 1
    result = rrd_cli("config", "check", "-c", str(path))
    assert result.returncode == 78
    assert result.stderr.startswith(f"rrd: {path}:{line}: rpc.listen: tcp://0.0.0.0:6001 is not")
    assert "rpc.allow_remote: true" in result.stderr and "Traceback" not in result.stderr
    path.write_text(config(extra="rpc:\n  listen: tcp://0.0.0.0:6001\n  allow_remote: true\n"))
    assert rrd_cli("config", "check", "-c", str(path)).returncode == 0


# -- unix sockets: both ends check the other ----------------------------------------------


@root_only
def test_another_user_cannot_reach_the_default_socket(rrd: Any, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # let nobody reach the directory: the socket's mode still refuses
    daemon = rrd(config(), "--pidfile", str(tmp_path / "rrd.pid"), env={"TICK_LOG": "/dev/null"})
    daemon.wait_event("daemon.ready")
    where = ("-c", str(tmp_path / ".rr.yaml"), "--pidfile", str(tmp_path / "rrd.pid"))
    refused = rrd_cli("stop", *where, prefix=NOBODY)
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    assert daemon.process.poll() is None


@root_only
def test_a_client_of_a_user_not_allowed_is_refused_and_logged(
    rrd: Any, tmp_path: Path, open_dir: Path
) -> None:
    sock = open_dir / "ctl.sock"
    extra = f"rpc:\n  listen: unix://{sock}\n  allow_uids: [4242]\n  allow_groups: [4343]\n"
    daemon = rrd(config(extra=extra), env={"TICK_LOG": "/dev/null"})
    daemon.wait_event("daemon.ready")
    assert oct(sock.stat().st_mode & 0o777) == "0o666"  # the credentials decide
    probe = (
        "import socket,sys;from rrd.protocol.rpc import encode_request;"
        f"s=socket.socket(socket.AF_UNIX);s.connect({str(sock)!r});"
        "s.sendall(encode_request(7,'rrd.Stop',None).encode());"
        "sys.stdout.buffer.write(s.recv(65536))"
    )
    for prefix, served in ((NOBODY, False), (("setpriv", "--groups", "4343"), True)):
        done = subprocess.run(
            [*prefix, sys.executable, "-c", probe], capture_output=True, cwd=ROOT, timeout=30
        )
        (reply,) = Decoder().feed(done.stdout)
        if not served:
            with pytest.raises(RpcError, match=r"uid 65534 \(nobody\) may not use this rrd"):
                parse_reply(reply, seq=7)
    refused = daemon.wait_event("control.refused")
    assert refused[0]["uid"] == 65534
    daemon.wait(15)  # the member of group 4343 was served: rrd.Stop stopped it


@root_only
def test_the_cli_refuses_a_socket_another_user_serves(tmp_path: Path, open_dir: Path) -> None:
    sock, heard = open_dir / "ctl.sock", open_dir / "heard"
    impostor = subprocess.Popen(
        [
            *NOBODY,
            sys.executable,
            "-c",
            "import socket,sys;s=socket.socket(socket.AF_UNIX);s.bind(sys.argv[1]);s.listen();"
            "print('up',flush=True);c,_=s.accept();c.settimeout(3);"
            "d=b''\ntry:\n d=c.recv(100)\nexcept OSError:\n pass\n"
            "open(sys.argv[2],'wb').write(d)",
            str(sock),
            str(heard),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert impostor.stdout is not None and impostor.stdout.readline() == b"up\n"
        (tmp_path / ".rr.yaml").write_text(config(extra=f"rpc:\n  listen: unix://{sock}\n"))
        result = rrd_cli("reload", "-c", str(tmp_path / ".rr.yaml"))
        assert result.returncode == 77
        assert f"refusing the control socket {sock}: it is served by uid 65534 (nobody)" in (
            result.stderr
        )
        impostor.wait(10)
        assert heard.read_bytes() == b""  # not one byte was sent to it
        serve = rrd_cli("serve", "-c", str(tmp_path / ".rr.yaml"))
        assert serve.returncode == 77
        assert f"{sock}: it belongs to uid 65534 (nobody)" in serve.stderr
        assert sock.is_socket()  # refused, never removed
    finally:
        impostor.kill()
        impostor.wait()


@pytest.mark.parametrize("planted", ["file", "symlink"])
def test_a_file_at_the_socket_path_is_refused_never_removed(tmp_path: Path, planted: str) -> None:
    sock, target = tmp_path / "ctl.sock", tmp_path / "target"
    target.write_text("keep me\n")
    if planted == "file":
        sock.write_text("keep me too\n")
    else:
        sock.symlink_to(target)
    (tmp_path / ".rr.yaml").write_text(
        config(extra=f"rpc:\n  listen: unix://{sock}\n"),
    )
    result = rrd_cli("serve", "-c", str(tmp_path / ".rr.yaml"), TICK_LOG="/dev/null")
    assert result.returncode == 77
    kind = "a regular file" if planted == "file" else "a symlink"
    assert f"refusing the control socket {sock}: {kind} is there" in result.stderr
    assert target.read_text() == "keep me\n"
    assert sock.is_symlink() if planted == "symlink" else sock.read_text() == "keep me too\n"


@root_only
def test_a_runtime_directory_planted_by_another_user_is_refused(open_dir: Path) -> None:
    """tmux's rule: rrd (here as nobody, with no XDG_RUNTIME_DIR) will not use an
    `rrd-<uid>` directory that another user (uid 1000) made first in the temp directory."""
    (open_dir / ".rr.yaml").write_text(nobodys_config())
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "RUNTIME_DIRECTORY")}
    planted = open_dir / "rrd-65534"
    subprocess.run([*SQUATTER, "mkdir", "-m", "0777", str(planted)], check=True)
    result = subprocess.run(
        [*NOBODY, sys.executable, "-m", "rrd", "status", "-c", str(open_dir / ".rr.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**env, "TMPDIR": str(open_dir)},
    )
    assert result.returncode == 77
    assert (
        f"refusing the control socket directory {planted}: it is owned by uid 1000" in result.stderr
    )
    served = subprocess.run(
        [*NOBODY, sys.executable, "-m", "rrd", "serve", "-c", str(open_dir / ".rr.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**env, "TMPDIR": str(open_dir), "TICK_LOG": "/dev/null"},
    )
    assert served.returncode == 77 and "owned by uid 1000" in served.stderr
    assert planted.is_dir() and list(planted.iterdir()) == []  # used for nothing


@root_only
def test_an_unprivileged_rrd_makes_its_own_private_directory(open_dir: Path) -> None:
    (open_dir / ".rr.yaml").write_text(nobodys_config())
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "RUNTIME_DIRECTORY")}
    env.update(TMPDIR=str(open_dir), TICK_LOG="/dev/null")
    daemon = subprocess.Popen(
        [*NOBODY, sys.executable, "-m", "rrd", "serve", "-c", str(open_dir / ".rr.yaml")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        home = open_dir / "rrd-65534"
        sockets = wait_until(lambda: home.is_dir() and list(home.glob("rrd-*.sock")), 20)
        info = home.stat()
        assert info.st_uid == 65534 and info.st_mode & 0o777 == 0o700
        assert sockets[0].stat().st_mode & 0o777 == 0o600
        status = subprocess.run(
            [
                *NOBODY,
                sys.executable,
                "-m",
                "rrd",
                "status",
                "--json",
                "-c",
                str(open_dir / ".rr.yaml"),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            env=env,
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["pid"] == daemon.pid
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0


def serve_as_nobody(sock: Path) -> subprocess.Popen[bytes]:
    """A listener at `sock`, run as nobody, that accepts connections until killed."""
    server = subprocess.Popen(
        [
            *NOBODY,
            sys.executable,
            "-c",
            "import socket,sys;s=socket.socket(socket.AF_UNIX);s.bind(sys.argv[1]);s.listen();"
            "print('up',flush=True)\nwhile True: s.accept()",
            str(sock),
        ],
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None and server.stdout.readline() == b"up\n"
    return server


@root_only
@pytest.mark.parametrize("parent_mode", [0o755, 0o1777])
def test_root_trusts_a_service_users_socket_only_in_a_runtime_directory_of_its_own(
    parent_mode: int,
) -> None:
    """systemd's DynamicUser runs rrd as a user of its own, in a RuntimeDirectory= it owns
    under root's /run: root's `rrd status` must trust it there, and nowhere another user
    could have planted it (a directory under a world-writable one)."""
    base = Path(tempfile.mkdtemp(prefix="rrd-test-"))
    base.chmod(0o755)
    parent = base / "run"
    parent.mkdir()
    parent.chmod(parent_mode)
    runtime = parent / "rrd"
    runtime.mkdir(mode=0o755)
    os.chown(runtime, 65534, 65534)
    server = serve_as_nobody(runtime / "rrd.sock")
    try:
        client = ControlClient(f"unix://{runtime / 'rrd.sock'}")
        if parent_mode == 0o755:
            client.connect()
            assert client.server_pid == server.pid
        else:
            with pytest.raises(UnsafeControlPath, match="served by uid 65534"):
                client.connect()
        client.close()
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(base, ignore_errors=True)
