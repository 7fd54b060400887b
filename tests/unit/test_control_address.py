"""Where the control socket lives, and which directories rrd refuses (tmux's rule)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from rrd.config import load_config
from rrd.control.address import UnsafeControlPath, control_address, is_loopback
from rrd.errors import ConfigError

SOURCE = Path("/srv/app/.rr.yaml")


def address(tmp_path: Path, uid: int, **kwargs: object) -> str:
    env = kwargs.pop("environ", {"TMPDIR": str(tmp_path)})
    return control_address(
        SOURCE,
        Path("/srv/app"),
        uid=uid,
        environ=env,
        run=tmp_path / "run",
        **kwargs,  # type: ignore[arg-type]
    )


def test_root_gets_run_rrd_and_a_name_per_config(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    first = address(tmp_path, 0, create=True)
    assert first.startswith(f"unix://{tmp_path}/run/rrd/rrd-") and first.endswith(".sock")
    assert (tmp_path / "run" / "rrd").stat().st_mode & 0o777 == 0o755
    other = control_address(Path("/srv/b/.rr.yaml"), Path("/srv/b"), uid=0, run=tmp_path / "run")
    assert other != first and os.path.dirname(other) == os.path.dirname(first)


def test_a_user_gets_xdg_runtime_dir_then_a_private_temp_directory(tmp_path: Path) -> None:
    uid = os.geteuid()
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    got = address(tmp_path, uid, environ={"XDG_RUNTIME_DIR": str(xdg)}, create=True)
    assert got.startswith(f"unix://{xdg}/rrd/rrd-")
    got = address(tmp_path, uid, create=True)
    assert got.startswith(f"unix://{tmp_path}/rrd-{uid}/rrd-")
    assert (tmp_path / f"rrd-{uid}").stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to nobody needs root")
def test_a_temp_directory_made_by_another_user_is_refused(tmp_path: Path) -> None:
    """As root with no /run (here: a missing one), the fallback /tmp/rrd-0 planted by nobody."""
    planted = tmp_path / "rrd-0"
    planted.mkdir(mode=0o700)
    os.chown(planted, 65534, 65534)
    with pytest.raises(UnsafeControlPath, match=r"rrd-0: it is owned by uid 65534 \(nobody\)"):
        address(tmp_path, 0, create=True)
    with pytest.raises(UnsafeControlPath, match="owned by uid 65534"):
        address(tmp_path, 0)  # the CLI refuses it too, before it connects
    assert planted.is_dir()  # refused, never removed


@pytest.mark.parametrize("planted", ["open", "symlink", "file"])
def test_an_unsafe_private_directory_is_refused(tmp_path: Path, planted: str) -> None:
    uid = os.geteuid()
    path = tmp_path / f"rrd-{uid}"
    if planted == "open":
        path.mkdir()
        path.chmod(0o755)
        why = "has mode 0755: open to other users"
    elif planted == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        path.symlink_to(tmp_path / "elsewhere")
        why = "is a symlink, not a directory"
    else:
        path.write_text("")
        why = "is a regular file, not a directory"
    with pytest.raises(UnsafeControlPath, match=why):
        address(tmp_path, uid, create=True)


def test_the_socket_is_beside_the_pidfile_only_where_nobody_else_may_write(
    tmp_path: Path,
) -> None:
    (tmp_path / "run").mkdir()
    safe, shared = tmp_path / "safe", tmp_path / "shared"
    safe.mkdir(mode=0o755)
    shared.mkdir()
    shared.chmod(0o1777)
    assert address(tmp_path, 0, pidfile=str(safe / "rrd.pid")) == f"unix://{safe}/rrd.sock"
    moved = address(tmp_path, 0, pidfile=str(shared / "rrd.pid"))
    assert moved.startswith(f"unix://{tmp_path}/run/rrd/rrd-")


def test_runtime_directory_is_used_as_systemd_made_it(tmp_path: Path) -> None:
    runtime = tmp_path / "unit"
    runtime.mkdir(mode=0o755)
    env = {"RUNTIME_DIRECTORY": f"{runtime}:{tmp_path}/other"}
    assert address(tmp_path, 0, environ=env) == f"unix://{runtime}/rrd.sock"
    runtime.chmod(0o777)
    with pytest.raises(UnsafeControlPath, match="other users may write in it"):
        address(tmp_path, 0, environ=env, create=True)  # the daemon refuses to listen there
    # the CLI only finds it: it trusts the server by its peer credentials, not by the folder
    assert address(tmp_path, 0, environ=env) == f"unix://{runtime}/rrd.sock"


def test_listen_wins_and_a_relative_unix_path_is_the_workdirs(tmp_path: Path) -> None:
    assert address(tmp_path, 0, listen="tcp://127.0.0.1:6001") == "tcp://127.0.0.1:6001"
    assert address(tmp_path, 0, listen="unix://rrd.sock") == "unix:///srv/app/rrd.sock"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_rpc_keys_are_checked_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / ".rr.yaml"
    path.write_text('version: "3"\nrpc:\n  listen: tcp://[::]:6001\n')
    with pytest.raises(ConfigError, match=r":3: rpc.listen: tcp://\[::\]:6001 is not a loopback"):
        load_config(path)
    path.write_text('version: "3"\nrpc:\n  listen: tcp://[::]:6001\n  allow_remote: true\n')
    assert load_config(path).rpc.allow_remote  # type: ignore[union-attr]
    path.write_text('version: "3"\nrpc:\n  allow_groups: [nogroup, 4242, no-such-group-here]\n')
    with pytest.raises(ConfigError, match=r":3: rpc.allow_groups: no group named 'no-such"):
        load_config(path)
    path.write_text('version: "3"\nrpc:\n  allow_uids: [nobody, 1000]\n')
    assert load_config(path).rpc.allow_uids == ("nobody", "1000")  # type: ignore[union-attr]


def test_roots_cli_finds_the_shipped_units_sockets(tmp_path: Path) -> None:
    """rrd.service and rrd@shop.service listen in their RuntimeDirectory= (owned by the unit's
    user): `sudo rrd status -c /etc/rrd/rr.yaml` must find them without RUNTIME_DIRECTORY."""
    run = tmp_path / "run"
    (run / "rrd").mkdir(parents=True)
    (run / "rrd-shop").mkdir()

    def cli(config: str, uid: int = 0, create: bool = False) -> str:
        return control_address(Path(config), Path("/"), uid=uid, environ={}, run=run, create=create)

    assert cli("/etc/rrd/rr.yaml").startswith(f"unix://{run}/rrd/rrd-")  # nothing listens yet
    sockets = []
    for path in (run / "rrd" / "rrd.sock", run / "rrd-shop" / "rrd.sock"):
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        sockets.append(listener)
    try:
        assert cli("/etc/rrd/rr.yaml") == f"unix://{run}/rrd/rrd.sock"
        assert cli("/etc/rrd/shop.yaml") == f"unix://{run}/rrd-shop/rrd.sock"
        assert cli("/etc/rrd/blog.yaml").startswith(f"unix://{run}/rrd/rrd-")
        assert cli("/srv/app/rr.yaml").startswith(f"unix://{run}/rrd/rrd-")  # not the units'
        assert not cli("/etc/rrd/rr.yaml", uid=1000).endswith("/rrd/rrd.sock")  # root's only
        # the daemon never takes a unit's socket for its own
        assert cli("/etc/rrd/rr.yaml", create=True).startswith(f"unix://{run}/rrd/rrd-")
    finally:
        for listener in sockets:
            listener.close()
