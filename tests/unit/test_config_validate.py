"""validate: what serve would refuse at start, found before it starts, at the key's line."""

# setting() returns a dataclasses.field, as RUF009 cannot know.

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrd.config import Config, PoolConfig, ServerConfig, load_config, setting, validate
from rrd.errors import EX_CONFIG, ConfigError
from tests.helpers import ROOT


@dataclass(frozen=True)
class DemoConfig:
    """A plugin section with a pool, under a name the config room does not know."""

    pool: PoolConfig = setting(PoolConfig(), "The demo's pool.")


@dataclass(frozen=True)
class PlainConfig:
    """A plugin section without a pool."""

    name: str = setting("", "A name.")


@dataclass(frozen=True)
class ManyConfig:
    """A plugin section with pools by name."""

    pools: dict[str, PoolConfig] = setting({}, "Pools by name.")


SECTIONS: dict[str, type] = {"demo": DemoConfig, "plain": PlainConfig, "many": ManyConfig}
V = 'version: "3"\n'
PYTHON = sys.executable
SCRIPT = "#!/bin/sh\nexit 0\n"


def load(tmp_path: Path, text: str, **kwargs: Any) -> Config:
    path = tmp_path / ".rr.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    kwargs.setdefault("environ", {})
    kwargs.setdefault("workdir", tmp_path)
    return load_config(path, sections=SECTIONS, **kwargs)


def fault(tmp_path: Path, text: str, environ: dict[str, str] | None = None, **kwargs: Any) -> str:
    """The one line validate fails with; the file's path is written FILE."""
    config = load(tmp_path, text, **kwargs)
    with pytest.raises(ConfigError) as caught:
        validate(config, environ={} if environ is None else environ)
    assert caught.value.exit_code == EX_CONFIG
    line = str(caught.value)
    assert "\n" not in line
    return line.replace(str(tmp_path / ".rr.yaml"), "FILE").replace(str(tmp_path), "TMP")


def program(directory: Path, name: str, mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(SCRIPT)
    path.chmod(mode)
    return path


def test_a_valid_config_passes_and_creates_nothing(tmp_path: Path) -> None:
    text = f"""\
        version: "3"
        server:
          command: ["{PYTHON}", w.py]
          on_init:
            command: ["{PYTHON}", "-c", ""]
        logs:
          output: rrd.log
        demo:
          pool: {{num_workers: 1}}
        plain: {{}}
        """
    validate(load(tmp_path, text), environ={})
    assert not (tmp_path / "rrd.log").exists()


# A pool needs a command ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            V + "server:\n  user: ''\ndemo:\n  pool: {}\n",
            "FILE:2: server.command: the demo plugin needs a command to start its workers; "
            "set server.command or demo.pool.command",
        ),
        (
            V + "demo:\n",
            "FILE: server.command: the demo plugin needs a command to start its workers; "
            "set server.command or demo.pool.command",
        ),
        (
            V + "many:\n  pools:\n    a: {command: " + PYTHON + "}\n    b: {}\n",
            "FILE: server.command: the many plugin needs a command to start its workers; "
            "set server.command or many.pools.b.command",
        ),
    ],
    ids=["line-of-server", "no-server-section", "pools-by-name"],
)
def test_a_pool_without_a_command(tmp_path: Path, text: str, expected: str) -> None:
    assert fault(tmp_path, text) == expected


def test_a_pool_command_or_no_pool_needs_no_server_command(tmp_path: Path) -> None:
    validate(load(tmp_path, V + f"demo:\n  pool:\n    command: {PYTHON} w.py\n"), environ={})
    validate(load(tmp_path, V + "plain: {name: x}\nmany: {}\n"), environ={})


def test_a_missing_command_from_an_override_names_the_file(tmp_path: Path) -> None:
    line = fault(tmp_path, V + "server:\n  user: ''\n", overrides=["demo.pool.num_workers=2"])
    assert line.startswith("FILE:2: server.command: the demo plugin needs a command")


# The program can be executed ------------------------------------------------------------------


def test_command_not_found_on_path(tmp_path: Path) -> None:
    text = V + "server:\n  command: phpx worker.php\ndemo: {}\n"
    environ = {"PATH": str(tmp_path / "bin")}
    assert fault(tmp_path, text, environ) == "FILE:3: server.command: command not found: 'phpx'"


def test_permission_denied_relative_to_the_workdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program(tmp_path, "worker.sh", 0o644)
    monkeypatch.chdir("/")
    text = V + "server:\n  command: ./worker.sh\ndemo: {}\n"
    assert fault(tmp_path, text) == "FILE:3: server.command: permission denied: './worker.sh'"
    (tmp_path / "worker.sh").chmod(0o755)
    validate(load(tmp_path, text), environ={})


def test_the_key_of_the_command_used(tmp_path: Path) -> None:
    text = V + f"server:\n  command: {PYTHON}\ndemo:\n  pool:\n    command: [nope, x]\n"
    assert fault(tmp_path, text) == "FILE:6: demo.pool.command: command not found: 'nope'"
    text = V + f"server:\n  command: {PYTHON}\n  on_init:\n    command: nope\ndemo: {{}}\n"
    assert fault(tmp_path, text) == "FILE:5: server.on_init.command: command not found: 'nope'"


def test_the_server_command_is_checked_only_when_a_pool_uses_it(tmp_path: Path) -> None:
    validate(load(tmp_path, V + "server:\n  command: nope\nplain: {}\n"), environ={})
    text = V + f"server:\n  command: nope\ndemo:\n  pool: {{command: {PYTHON}}}\n"
    validate(load(tmp_path, text), environ={})


def test_an_overridden_command_names_the_override(tmp_path: Path) -> None:
    text = V + f"server:\n  command: {PYTHON}\ndemo: {{}}\n"
    line = fault(tmp_path, text, overrides=["server.command=phpx w.php"])
    assert line == "-o: server.command: command not found: 'phpx'"


@pytest.mark.parametrize(
    ("environ", "server_env", "pool_env", "found"),
    [
        ({"PATH": "BIN"}, "", "", True),
        ({"PATH": "/nonexistent"}, "", "", False),
        ({"PATH": "/nonexistent"}, "BIN", "", True),  # server.env wins over rrd's own
        ({"PATH": "BIN"}, "/nonexistent", "", False),
        ({"PATH": "BIN"}, "/nonexistent", "BIN", True),  # the pool's env wins over server.env
        ({}, "", "", False),  # the default path
        ({"PATH": "relative/bin"}, "", "", True),  # relative to the workdir
    ],
)
def test_the_path_the_workers_will_get(
    tmp_path: Path, environ: dict[str, str], server_env: str, pool_env: str, found: bool
) -> None:
    program(tmp_path / "bin", "myworker")
    program(tmp_path / "relative" / "bin", "myworker")
    bin_dir = str(tmp_path / "bin")
    environ = {k: v.replace("BIN", bin_dir) for k, v in environ.items()}
    server = f"  env: {{PATH: {server_env.replace('BIN', bin_dir)}}}\n" if server_env else ""
    pool = f"    env: {{PATH: {pool_env.replace('BIN', bin_dir)}}}\n" if pool_env else ""
    text = V + f"server:\n  command: myworker\n{server}demo:\n  pool:\n    max_jobs: 1\n{pool}"
    config = load(tmp_path, text)
    if found:
        validate(config, environ=environ)
    else:
        with pytest.raises(ConfigError, match="command not found: 'myworker'"):
            validate(config, environ=environ)


def test_the_dotenv_path_comes_after_the_environments(tmp_path: Path) -> None:
    program(tmp_path / "bin", "myworker")
    (tmp_path / ".env").write_text(f"PATH={tmp_path / 'bin'}\n")
    text = V + "server:\n  command: myworker\ndemo: {}\n"
    validate(load(tmp_path, text, dotenv=".env"), environ={})
    with pytest.raises(ConfigError, match="command not found"):
        validate(load(tmp_path, text, dotenv=".env"), environ={"PATH": "/nonexistent"})


# What execvp would do, with Popen as the oracle: each PATH entry holds the program as an
# executable, a non-executable file, a directory, or nothing; some entries do not exist.
ENTRY = st.sampled_from(["exec", "noexec", "dir", "absent", "missing-dir", "file-as-dir"])


@given(st.lists(ENTRY, max_size=5), st.booleans())
@settings(max_examples=60, deadline=None)
def test_program_lookup_agrees_with_popen(
    tmp_path_factory: pytest.TempPathFactory, entries: list[str], empty_entry: bool
) -> None:
    root = tmp_path_factory.mktemp("path")
    directories = []
    for i, kind in enumerate(entries):
        directory = root / f"d{i}"
        directories.append(str(directory))
        if kind == "missing-dir":
            continue
        if kind == "file-as-dir":
            directory.write_text("")
            continue
        directory.mkdir()
        if kind == "dir":
            (directory / "prog").mkdir()
        elif kind != "absent":
            program(directory, "prog", 0o755 if kind == "exec" else 0o644)
    if empty_entry:
        directories.append("")  # the working directory
    path = os.pathsep.join(directories)
    config = Config(
        version="3",
        source=root / ".rr.yaml",
        workdir=root,
        server=ServerConfig(command=("prog",)),
        sections={"demo": DemoConfig()},
    )
    try:
        subprocess.run(["prog"], env={"PATH": path}, cwd=root, check=True)
        expected = None
    except (FileNotFoundError, NotADirectoryError):
        expected = "command not found"
    except PermissionError:
        expected = "permission denied"
    try:
        validate(config, environ={"PATH": path})
        got = None
    except ConfigError as err:
        got = err.message.split(":")[0]
    assert got == expected


# server.user and server.group ---------------------------------------------------------------


def test_a_user_or_group_that_does_not_exist(tmp_path: Path) -> None:
    text = V + "server:\n  user: rrd-no-such-user\n"
    assert fault(tmp_path, text) == "FILE:3: server.user: no such user: 'rrd-no-such-user'"
    text = V + "server:\n  group: rrd-no-such-group\n"
    assert fault(tmp_path, text) == "FILE:3: server.group: no such group: 'rrd-no-such-group'"
    assert fault(tmp_path, V + "server:\n  user: 4242\n").endswith(
        "no such user: '4242' (write the user's name, not its number)"
    )


def test_another_user_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    me = pwd.getpwuid(os.getuid())
    other = next(u for u in pwd.getpwall() if u.pw_uid != me.pw_uid)
    if me.pw_uid == 0:  # run as a user who is not root, the one named `me`
        me = other
        other = pwd.getpwuid(0)
        monkeypatch.setattr(os, "geteuid", lambda: me.pw_uid)
    validate(load(tmp_path, V + f"server:\n  user: {me.pw_name}\n"), environ={})
    line = fault(tmp_path, V + f"server:\n  user: {other.pw_name}\n")
    assert line == "FILE:3: server.user: running workers as another user needs root"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    validate(load(tmp_path, V + f"server:\n  user: {other.pw_name}\n"), environ={})


def test_another_group_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = grp.getgrgid(os.getgid())
    other = next(g for g in grp.getgrall() if g.gr_gid != mine.gr_gid)
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    validate(load(tmp_path, V + f"server:\n  group: {mine.gr_name}\n"), environ={})
    line = fault(tmp_path, V + f"server:\n  group: {other.gr_name}\n")
    assert line == "FILE:3: server.group: running workers with another group needs root"


# logs.output ----------------------------------------------------------------------------------


def test_a_log_file_that_cannot_be_appended_to(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    text = V + "logs:\n  output: {}\n"
    assert fault(tmp_path, text.format("nodir/rrd.log")) == (
        "FILE:3: logs.output: cannot append to 'TMP/nodir/rrd.log': no directory 'TMP/nodir'"
    )
    assert fault(tmp_path, text.format("logs")) == (
        "FILE:3: logs.output: cannot append to 'TMP/logs': it is a directory"
    )
    (tmp_path / "file").write_text("")
    assert fault(tmp_path, text.format("file/rrd.log")) == (
        "FILE:3: logs.output: cannot append to 'TMP/file/rrd.log': no directory 'TMP/file'"
    )


def test_a_log_file_is_checked_not_created_nor_touched(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "rrd.log"
    log.parent.mkdir()
    text = V + f"logs:\n  output: {log}\n"
    validate(load(tmp_path, text), environ={})
    assert not log.exists()
    log.write_text("old\n")
    validate(load(tmp_path, text), environ={})
    assert log.read_text() == "old\n"
    validate(load(tmp_path, V + "logs:\n  output: stdout\n"), environ={})


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_log_file_without_write_permission(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "old.log").write_text("")
    (locked / "old.log").chmod(0o444)
    locked.chmod(0o555)
    try:
        text = V + "logs:\n  output: {}\n"
        for name in ("locked/new.log", "locked/old.log"):
            assert fault(tmp_path, text.format(name)).endswith(f"{name}': permission denied")
    finally:
        locked.chmod(0o755)


def test_a_log_file_is_checked_for_write_permission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the test above, for a root who may write anywhere: access is asked of the file when
    # it exists, else of its directory, and the answer is believed.
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "old.log").write_text("")
    asked: list[tuple[str, int]] = []

    def access(path: Any, mode: int) -> bool:
        asked.append((os.fspath(path), mode))
        return False

    config = load(tmp_path, V + "logs:\n  output: logs/old.log\n")
    monkeypatch.setattr(os, "access", access)
    with pytest.raises(ConfigError, match=r"logs/old\.log': permission denied$"):
        validate(config, environ={})
    assert asked == [(str(tmp_path / "logs" / "old.log"), os.W_OK)]
    asked.clear()
    config = load(tmp_path, V + "logs:\n  output: logs/new.log\n")
    with pytest.raises(ConfigError, match=r"logs/new\.log': permission denied$"):
        validate(config, environ={})
    assert asked == [(str(tmp_path / "logs"), os.W_OK | os.X_OK)]


def test_the_first_fault_is_the_one_serve_meets_first(tmp_path: Path) -> None:
    text = V + "server:\n  user: rrd-no-such-user\nlogs:\n  output: nodir/x.log\ndemo: {}\n"
    assert "logs.output" in fault(tmp_path, text)
    text = V + "server:\n  user: rrd-no-such-user\ndemo: {}\n"
    assert "server.user" in fault(tmp_path, text)


# The command line: config check and serve both go through validate.


@pytest.mark.parametrize("command", ["config check", "serve"])
def test_check_and_serve_refuse_the_same_config(tmp_path: Path, command: str) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text(V + "server:\n  command: rrd-no-such-program\nticker:\n  interval: 1s\n")
    result = subprocess.run(
        [PYTHON, "-m", "rrd", *command.split(), "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == EX_CONFIG, result.stderr
    assert result.stderr == (
        f"rrd: {path}:3: server.command: command not found: 'rrd-no-such-program'\n"
    )
