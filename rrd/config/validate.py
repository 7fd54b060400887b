"""What `serve` would refuse at start that the file alone cannot tell, checked before it starts.

Room: config. Imports only `rrd.errors`, `rrd.proc`, the standard library and the rest of
`rrd.config`; knows no plugin by name: a plugin's pool is any `PoolConfig` in its section.

`rrd config check` and `rrd serve` both run `validate` after loading, so that check says what
serve would say, and serve says it before anything starts. The checks, in the order serve
meets them: `logs.output` can be appended to; `server.user` and `server.group` exist and may
be taken; `server.on_init.command` and each pool's command can be executed, as execvp would
find them with the PATH the child will get. Each fault is one ConfigError at its key's line
(`Config.error`). Nothing is created or run.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from rrd.config.schema import Config, PoolConfig
from rrd.proc import find_program

__all__ = ["validate"]


def validate(config: Config, *, environ: Mapping[str, str] | None = None) -> None:
    """Raise the first ConfigError `serve` would meet at start; `environ` is rrd's own."""
    environ = os.environ if environ is None else environ
    _check_log_output(config)
    _check_identity(config)
    on_init = config.server.on_init
    if on_init is not None:
        path = _path(config, environ, on_init.env)
        _check_program(config, "server.on_init.command", on_init.command, path)
    for section, key, pool in _pools(config):
        if pool.command:
            command_key, command = f"{key}.command", pool.command
        elif config.server.command:
            command_key, command = "server.command", config.server.command
        else:
            raise config.error(
                "server.command",
                f"the {section} plugin needs a command to start its workers; "
                f"set server.command or {key}.command",
            )
        _check_program(config, command_key, command, _path(config, environ, pool.env))


def _pools(config: Config) -> Iterator[tuple[str, str, PoolConfig]]:
    """(section, dotted key, pool) for every pool in the plugins' sections, in file order."""
    for name, section in config.sections.items():
        for key, pool in _find_pools(section, name):
            yield name, key, pool


def _find_pools(value: object, key: str) -> Iterator[tuple[str, PoolConfig]]:
    if isinstance(value, PoolConfig):
        yield key, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _find_pools(getattr(value, field.name), f"{key}.{field.name}")
    elif isinstance(value, Mapping):
        for name, item in value.items():
            yield from _find_pools(item, f"{key}.{name}")


def _path(config: Config, environ: Mapping[str, str], own: Mapping[str, str]) -> str | None:
    """The PATH a child gets: its own env over server.env over rrd's environment over
    --dotenv, as `Server` layers them; None when none sets it."""
    for env in (own, config.server.env, environ, config.dotenv):
        if "PATH" in env:
            return env["PATH"]
    return None


def _check_program(config: Config, key: str, command: tuple[str, ...], path: str | None) -> None:
    program = command[0]
    try:
        find_program(program, path, config.workdir)
    except OSError as exc:
        raise config.error(key, f"{exc.strerror}: {program!r}") from None


def _check_identity(config: Config) -> None:
    """server.user and server.group exist, and rrd may switch to them (root, or its own)."""
    user, group = config.server.user, config.server.group
    root = os.geteuid() == 0
    if user:
        try:
            uid = pwd.getpwnam(user).pw_uid
        except (KeyError, ValueError):
            hint = " (write the user's name, not its number)" if user.isdigit() else ""
            raise config.error("server.user", f"no such user: {user!r}{hint}") from None
        if not root and uid != os.geteuid():
            raise config.error("server.user", "running workers as another user needs root")
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except (KeyError, ValueError):
            hint = " (write the group's name, not its number)" if group.isdigit() else ""
            raise config.error("server.group", f"no such group: {group!r}{hint}") from None
        if not root and gid not in (os.getgid(), os.getegid()):
            raise config.error("server.group", "running workers with another group needs root")


def _check_log_output(config: Config) -> None:
    """A logs.output file can be opened for appending: checked, never created."""
    output = config.logs.output
    if output in ("stderr", "stdout"):
        return
    path = config.workdir / output
    problem = _why_not_appendable(path)
    if problem is not None:
        raise config.error("logs.output", f"cannot append to {str(path)!r}: {problem}")


def _why_not_appendable(path: Path) -> str | None:
    if "\0" in str(path):
        return "a path must not hold NUL"
    try:
        mode: int | None = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as exc:  # too long, a symlink loop, a directory rrd may not search
        return exc.strerror or str(exc)
    if mode is not None:
        if stat.S_ISDIR(mode):
            return "it is a directory"
        return None if os.access(path, os.W_OK) else "permission denied"
    parent = Path(os.path.realpath(path)).parent  # where a dangling symlink's target would be
    try:
        if not stat.S_ISDIR(parent.stat().st_mode):
            return f"no directory {str(parent)!r}"
    except (FileNotFoundError, NotADirectoryError):
        return f"no directory {str(parent)!r}"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None if os.access(parent, os.W_OK | os.X_OK) else "permission denied"
