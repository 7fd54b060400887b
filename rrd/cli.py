"""The `rrd` command: serve, config check|docs, plugins.

Room: cli, the top. Turns every RrdError into one line on stderr and its sysexits code;
anything else escaping is a bug and exits 70 with its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from rrd import __version__
from rrd import logging as rrd_logging
from rrd.config import Config, load_config, render_docs, validate
from rrd.control.address import control_address, kind_of
from rrd.control.client import ControlClient
from rrd.daemon import Daemon
from rrd.errors import (
    EX_SOFTWARE,
    EX_USAGE,
    ConfigError,
    DaemonUnavailable,
    RrdError,
    UsageError,
)
from rrd.notify import Notifier
from rrd.plugins import registry
from rrd.proc import ProcessRegistry, alive, parent_death_launcher
from rrd.protocol.rpc import RpcError
from rrd.server import warn_root_workers
from rrd.signals import EarlySignals
from rrd.worker import install_child_watcher

log = logging.getLogger("rrd.cli")

RESET_WAIT = 600.0
"""How long `rrd reload` and `rrd reset` wait for rrd to finish (its reset_timeout bounds it)."""


class OperationFailed(RrdError):
    """rrd refused or failed what an operator's command asked (exit 70)."""

    exit_code = EX_SOFTWARE


F = TypeVar("F", bound=Callable[..., Any])


def config_options(command: F) -> F:
    """-c, -w, -o and --dotenv, as RoadRunner's `rr` takes them."""
    options = [
        click.option(
            "-c",
            "--config",
            "config_path",
            default=".rr.yaml",
            show_default=True,
            metavar="FILE",
            help="Config file, relative to the working directory.",
        ),
        click.option(
            "-w",
            "--workdir",
            type=click.Path(file_okay=False),
            help="Working directory for rrd and its workers.",
        ),
        click.option(
            "-o",
            "--override",
            "overrides",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a config key, as ticker.interval=5s (repeatable).",
        ),
        click.option(
            "--dotenv",
            type=click.Path(dir_okay=False),
            help="Load KEY=VALUE lines into the environment before expansion.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def load(
    config_path: str,
    workdir: str | None,
    overrides: tuple[str, ...],
    dotenv: str | None,
    *,
    validated: bool = True,
) -> Config:
    """The config, with every installed plugin's section known to the loader, validated as
    `serve` needs it: `config check` and `serve` refuse the same configs."""
    config = load_config(
        config_path,
        sections=registry.config_sections(registry.installed()),
        overrides=overrides,
        workdir=workdir,
        dotenv=dotenv,
    )
    if validated:
        validate(config)
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rrd")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """rrd: a RoadRunner-style application server, run as a systemd-style daemon."""
    early = ctx.obj
    if isinstance(early, EarlySignals) and ctx.invoked_subcommand != "serve":
        early.release()  # only the daemon holds its signals; the other commands act on them


PIDFILE = click.option(
    "--pidfile",
    type=click.Path(dir_okay=False),
    help="rrd's pid file: serve writes it; the other commands find rrd's control socket beside it.",
)


@cli.command()
@config_options
@PIDFILE
@click.option("--no-watch", is_flag=True, help="Do not reload when the config file changes.")
def serve(
    config_path: str,
    workdir: str | None,
    overrides: tuple[str, ...],
    dotenv: str | None,
    pidfile: str | None,
    no_watch: bool,
) -> None:
    """Run the server in the foreground until SIGTERM or SIGINT."""
    early = click.get_current_context().obj
    config = load(config_path, workdir, overrides, dotenv)
    # Later loads (reloads) must find the same files whatever the working directory is now.
    source, root = str(config.source), str(config.workdir)
    if workdir:
        os.chdir(config.workdir)  # before logs.output is opened: relative paths are the workdir's
    rrd_logging.configure(
        config.logs.mode, config.logs.level, config.logs.output, config.logs.journal
    )
    code = EX_SOFTWARE
    try:
        for warning in config.warnings:
            log.warning(warning, extra={"event": "config.warning", "config": str(config.source)})
        warn_root_workers(config)
        with claimed_pidfile(str(Path(root, pidfile)) if pidfile else None):
            listen = config.rpc.listen if config.rpc is not None else None
            watched = () if no_watch else (source, *([str(Path(root, dotenv))] if dotenv else ()))
            daemon = Daemon(
                config,
                registry.installed(),
                registry=ProcessRegistry(launcher=parent_death_launcher()),
                early=early if isinstance(early, EarlySignals) else None,
                load_config=functools.partial(load, source, root, overrides, dotenv),
                control_address=control_address(
                    config.source, config.workdir, listen=listen, pidfile=pidfile, create=True
                ),
                watch_files=watched,
                notifier=Notifier.from_environ(),
            )
            code = run(daemon)
    except RrdError as exc:
        code = exc.exit_code
        raise
    finally:
        if not rrd_logging.shutdown():
            os._exit(code)  # the log output is stuck: interpreter teardown would wait on it
    if code:
        raise SystemExit(code)


@cli.group()
def config() -> None:
    """Check a config file or list every setting."""


@config.command()
@config_options
def check(
    config_path: str, workdir: str | None, overrides: tuple[str, ...], dotenv: str | None
) -> None:
    """Exit 0 when the config is valid, else 78 with one line saying what is wrong."""
    loaded = load(config_path, workdir, overrides, dotenv)
    for warning in loaded.warnings:
        click.echo(f"rrd: warning: {warning}", err=True)
    click.echo(f"{loaded.source}: ok")


@config.command()
def docs() -> None:
    """Print every config key with its type, default and help."""
    click.echo(render_docs(registry.config_sections(registry.installed())), nl=False)


@cli.command()
@click.option("-c", "--config", "config_path", help="Also say which plugins this config enables.")
def plugins(config_path: str | None) -> None:
    """List the installed plugins (built-in and from the rrd.plugins entry points)."""
    installed = registry.installed()
    sections = (
        load_config(config_path, sections=registry.config_sections(installed)).sections
        if config_path
        else None
    )
    for name, cls in sorted(installed.items(), key=lambda item: -item[1].weight):
        origin = "built-in" if cls in registry.BUILTINS else cls.__module__
        status = "" if sections is None else ("  enabled" if name in sections else "  disabled")
        click.echo(f"{name:16} weight {cls.weight:<4} {origin}{status}")


# The operator's commands: each finds the daemon as serve would, from -c/-w/-o and --pidfile.


def find_daemon(
    config_path: str,
    workdir: str | None,
    overrides: tuple[str, ...],
    dotenv: str | None,
    pidfile: str | None,
) -> ControlClient:
    """A client for the rrd serving this config. The config is only read for `rpc.listen`:
    a file broken since rrd loaded it must not keep the operator from asking rrd."""
    root = Path(os.path.abspath(workdir or os.getcwd()))
    source = Path(os.path.abspath(root / config_path))
    listen = None
    try:
        loaded = load(config_path, workdir, overrides, dotenv, validated=False)
        listen = loaded.rpc.listen if loaded.rpc is not None else None
    except RrdError as exc:
        click.echo(f"rrd: warning: {exc}; looking for rrd at its default address", err=True)
    return ControlClient(control_address(source, root, listen=listen, pidfile=pidfile))


def operator_command(function: F) -> F:
    """-c/-w/-o/--dotenv and --pidfile, and one line for a call rrd refused (exit 70)."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except RpcError as exc:
            raise OperationFailed(str(exc)) from None

    return config_options(PIDFILE(call))  # type: ignore[return-value]


@cli.command()
@operator_command
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def status(as_json: bool, **where: Any) -> None:
    """Show the pools, their workers, restarts by reason, ticks and the config in force."""
    with find_daemon(**where) as client:
        report = client.call("rrd.Status")
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(render_status(report))


@cli.command()
@operator_command
@click.argument("plugins", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the workers as JSON.")
@click.option("-i", "--interactive", is_flag=True, help="Refresh every second until Ctrl-C.")
def workers(plugins: tuple[str, ...], as_json: bool, interactive: bool, **where: Any) -> None:
    """List the workers of every pool (or of the PLUGINS named), as `rr workers` does."""
    with find_daemon(**where) as client:
        while True:
            table = client.call("rrd.Workers", list(plugins) or None)
            if as_json:
                click.echo(json.dumps(table))
            else:
                if interactive:
                    click.clear()
                click.echo(render_workers(table))
            if not interactive:
                return
            try:
                time.sleep(1)
            except KeyboardInterrupt:
                return


@cli.command()
@operator_command
@click.argument("plugins", nargs=-1)
def reset(plugins: tuple[str, ...], **where: Any) -> None:
    """Replace every worker (of the PLUGINS named), successors first, and wait until done."""
    with find_daemon(**where) as client:
        client.call("rrd.Reset", list(plugins) or None, timeout=RESET_WAIT)
    click.echo(f"reset {', '.join(plugins) or 'every pool'}")


@cli.command()
@operator_command
def reload(**where: Any) -> None:
    """Send rrd a SIGHUP (re-read the config, then replace every worker) and wait until done.

    Exit 0 when the config was applied, 78 with its one-line error when it was rejected (rrd
    keeps running the old one)."""
    with find_daemon(**where) as client:
        before = client.call("rrd.Status")
        pid = daemon_pid(client, before, **where)
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + RESET_WAIT
        while time.monotonic() < deadline:
            now = client.call("rrd.Status")
            if now["reloads"] > before["reloads"] and now["state"] != "reloading":
                break
            time.sleep(0.05)
        else:
            raise OperationFailed(f"rrd {pid} did not finish its reload in {RESET_WAIT:g}s")
    outcome = now["last_reload"]
    if not outcome["applied"]:
        raise ConfigError(f"config rejected; rrd keeps the running one: {outcome['error']}")
    changes = "; ".join(outcome["changes"]) or "no change to the config"
    click.echo(f"reloaded in {outcome['duration_ms']:g} ms: {changes}")
    for change in outcome["restart_needed"]:
        click.echo(f"rrd: warning: needs a restart to apply: {change}", err=True)


@cli.command()
@operator_command
@click.option("--now", is_flag=True, help="Kill every worker at once instead of a graceful stop.")
@click.option(
    "--timeout",
    default=120,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the exit.",
)
def stop(now: bool, timeout: int, **where: Any) -> None:
    """Stop the daemon (gracefully unless --now) and wait until it has exited."""
    with find_daemon(**where) as client:
        pid = client.call("rrd.Status")["pid"]
        client.call("rrd.Stop", {"now": now})
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        raise OperationFailed(f"rrd {pid} is still stopping after {timeout:g}s")
    click.echo(f"stopped rrd {pid}")


@cli.command(context_settings={"ignore_unknown_options": True})  # `rrd scale ticker -1`
@operator_command
@click.argument("plugin")
@click.argument("workers")
def scale(plugin: str, workers: str, **where: Any) -> None:
    """Set PLUGIN's pool to WORKERS (N, +N or -N) until the config's num_workers changes or
    rrd restarts; surplus workers retire gracefully."""
    with find_daemon(**where) as client:
        result = client.call("rrd.Scale", {"plugin": plugin, "workers": workers})
    click.echo(f"{plugin}: {result['was']} -> {result['workers']} workers")


@cli.group()
def ticker() -> None:
    """List the ticker's schedules; pause, resume or run one now."""


@ticker.command("list")
@operator_command
@click.option("--json", "as_json", is_flag=True, help="Print the schedules as JSON.")
def ticker_list(as_json: bool, **where: Any) -> None:
    """Each schedule: when it ticks, its next tick, its last one and how it ended, its ledger."""
    with find_daemon(**where) as client:
        table = client.call("ticker.List")
    click.echo(json.dumps(table, indent=2) if as_json else render_schedules(table))


def schedule_command(action: str, done: str, help_text: str) -> None:
    """`rrd ticker pause|resume|run NAME`, on the control socket."""

    @ticker.command(action, help=help_text)
    @operator_command
    @click.argument("schedule")
    def command(schedule: str, **where: Any) -> None:
        with find_daemon(**where) as client:
            result = client.call(f"ticker.{action.capitalize()}", {"schedule": schedule})
        click.echo(
            done.format(schedule=schedule) if result["changed"] else f"{schedule}: as it was"
        )


schedule_command("pause", "{schedule}: paused", "Skip the ticks of SCHEDULE (counted as paused).")
schedule_command("resume", "{schedule}: resumed", "Send the ticks of SCHEDULE again.")
schedule_command("run", "{schedule}: a tick sent", "Send one tick of SCHEDULE now (manual).")


def render_schedules(table: dict[str, list[dict[str, Any]]]) -> str:
    """One table per plugin of its schedules."""
    blocks = []
    for plugin, rows in table.items():
        lines = [
            f"Schedules of [{plugin}]:",
            f"{'NAME':14}{'WHEN':28}{'NEXT':12}{'LAST TICK':18}{'LAST OUTCOME':20}LEDGER",
        ]
        for row in rows:
            when = schedule_when(row)
            upcoming = "paused" if row["paused"] else until(row.get("next_due"))
            last = ago(row["last_tick"]) if row.get("last_tick") else "never"
            lines.append(
                f"{row['name']:14}{when:28}{upcoming:12}{last:18}"
                f"{row.get('last_outcome') or '-':20}{ledger_text(row['ticks'])}"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) or "no schedule"


def ledger_text(ticks: dict[str, Any]) -> str:
    """`61 due: 60 delivered, 0 failed, 1 skipped, 0 in flight (busy 1)`: one schedule's."""
    text = (
        f"{ticks['due']} due: {ticks['delivered']} delivered, {ticks['failed']} failed, "
        f"{ticks['skipped']} skipped, {ticks['in_flight']} in flight"
    )
    reasons = {**ticks["failed_by"], **ticks["skipped_by"]}
    if reasons:
        text += f" ({', '.join(f'{r} {n}' for r, n in reasons.items())})"
    return text


def until(moment: float | None) -> str:
    """`in 3m 20s`, for a time to come."""
    if moment is None:
        return "-"
    seconds = max(0, int(moment - time.time()))
    if seconds >= 86400:
        return f"in {seconds // 86400}d {seconds % 86400 // 3600}h"
    if seconds >= 3600:
        return f"in {seconds // 3600}h {seconds % 3600 // 60}m"
    if seconds >= 60:
        return f"in {seconds // 60}m {seconds % 60}s"
    return f"in {seconds}s"


def daemon_pid(
    client: ControlClient,
    report: dict[str, Any],
    *,
    config_path: str,
    workdir: str | None,
    pidfile: str | None,
    **_: Any,
) -> int:
    """The pid of the rrd behind `client`, for a signal: the kernel's word on a unix socket
    (SO_PEERCRED), else a pidfile resolved as `serve` resolves it and naming a running
    `rrd serve` of the same config. Anything less is refused: a signal goes to rrd or nowhere."""
    if client.server_pid is not None:
        if client.server_pid != report.get("pid"):
            raise OperationFailed(
                f"the control socket is served by pid {client.server_pid}, which calls itself "
                f"pid {report.get('pid')}; signalling neither"
            )
        return client.server_pid
    over_tcp = f"{client.address} is TCP, which cannot name the process that serves it"
    if not pidfile:
        raise OperationFailed(f"{over_tcp}; give --pidfile as `rrd serve` was given it")
    root = Path(os.path.abspath(workdir or os.getcwd()))
    path = root / pidfile
    pid = read_pidfile(str(path))
    source = Path(os.path.abspath(root / config_path))
    problem = not_serving(pid, source)
    if problem is None and pid != report.get("pid"):
        problem = f"the rrd on {client.address} is pid {report.get('pid')}"
    if problem is not None:
        raise OperationFailed(
            f"{over_tcp}, and {path} names pid {pid}, but {problem}; no signal sent"
        )
    return pid


def not_serving(pid: int, source: Path) -> str | None:
    """Why `pid` is not a running `rrd serve` of the config `source` (/proc says), or None."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return f"no process {pid} runs (or it is not yours to inspect)"
    if "serve" not in argv:
        return f"pid {pid} is not `rrd serve` ({' '.join(argv).strip()[:80]!r})"
    before = argv[: argv.index("serve")]
    named = [Path(word).name for word in before]
    if not ("rrd" in named or "__main__.py" in named or "rrd" in before[-1:]):
        return f"pid {pid} is not rrd ({' '.join(argv).strip()[:80]!r})"
    after = argv[argv.index("serve") + 1 :]
    config = ".rr.yaml"
    for index, word in enumerate(after):
        if word in ("-c", "--config") and index + 1 < len(after):
            config = after[index + 1]
        elif word.startswith("--config="):
            config = word.removeprefix("--config=")
        elif word.startswith("-c") and len(word) > 2:
            config = word[2:]
    # serve moves into its workdir, where its config path (if relative) starts
    if Path(os.path.abspath(Path(cwd, config))) != source:
        return f"pid {pid} serves {Path(cwd, config)}, not {source}"
    return None


def read_pidfile(path: str) -> int:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        hint = f"is `rrd serve --pidfile {path}` running?"
        raise DaemonUnavailable(f"no rrd pid in {path}; {hint}") from None


def ago(moment: float) -> str:
    """`3 minutes ago`, as people read a time."""
    seconds = max(0, int(time.time() - moment))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return f"{seconds} second{'' if seconds == 1 else 's'} ago"


def megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def render_workers(table: dict[str, list[dict[str, Any]]]) -> str:
    """One table per plugin, the columns of `rr workers`."""
    blocks = []
    for plugin, rows in table.items():
        heading = f"{'PID':>8}  {'STATUS':10}{'EXECS':>8}{'MEMORY':>11}{'CPU%':>7}  CREATED"
        lines = [f"Workers of [{plugin}]:", heading]
        for row in rows:
            lines.append(
                f"{row['pid']:>8}  {row['status']:10}{row['execs']:>8}"
                f"{megabytes(row['memory']):>11}{row['cpu']:>7.1f}  {ago(row['created'])}"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) or "no pool"


def render_status(report: dict[str, Any]) -> str:
    """`rrd status` for people."""
    lines = [
        f"rrd {report['version']}, pid {report['pid']}, {report['state']}; config "
        f"{report['config']} (loaded {ago(report['config_loaded_at'])})"
    ]
    for name, plugin in report["plugins"].items():
        pool = plugin.get("pool", {})
        line = (
            f"{name}: {pool.get('state')}, {pool.get('ready', 0)} ready and "
            f"{pool.get('busy', 0)} busy of {pool.get('size', 0)} workers"
        )
        if pool.get("spares"):
            line += f", {pool['spares']} spare"
        ticks = plugin.get("ticks")
        if ticks:
            every = f" every {plugin['interval_s']:g}s" if plugin.get("interval_s") else ""
            line += (
                f";{every}: {ticks['due']} ticks due, "
                f"{ticks['delivered']} delivered, {ticks['failed']} failed, "
                f"{ticks['skipped']} skipped, {ticks['in_flight']} in flight"
            )
            reasons = {**ticks["failed_by"], **ticks["skipped_by"]}
            if reasons:
                line += f" ({', '.join(f'{r} {n}' for r, n in reasons.items())})"
        lines.append(line)
        for schedule in (plugin.get("schedules") or {}).values():
            lines.append("  " + schedule_text(schedule))
        if "health" in plugin:
            lines.append(
                "  probes: " + ", ".join(probe_text(plugin, p) for p in ("health", "ready"))
            )
        departures = pool.get("departures") or {}
        if departures:
            listed = ", ".join(f"{reason} {count}" for reason, count in departures.items())
            lines.append(f"  workers replaced: {listed}")
        if pool.get("last_error"):
            lines.append(f"  last error: {pool['last_error']}")
    served = [f"{k} on {v}" for k, v in (report.get("http") or {}).items() if v]
    if served:
        lines.append("http: " + ", ".join(served))
    reload_ = report.get("last_reload")
    if reload_:
        what = "applied" if reload_["applied"] else f"rejected: {reload_['error']}"
        lines.append(f"last reload ({reload_['source']}, {ago(reload_['at'])}): {what}")
    for change in report.get("restart_needed", []):
        lines.append(f"needs a restart: {change}")
    return "\n".join(lines)


def schedule_when(schedule: dict[str, Any]) -> str:
    return str(schedule.get("cron") or f"every {schedule['interval_s']:g}s")


def schedule_text(schedule: dict[str, Any]) -> str:
    """`schedule nightly (0 3 * * * in Europe/Berlin): next in 5h 2m; 3 due: 3 delivered...`."""
    when = schedule_when(schedule)
    upcoming = "paused" if schedule["paused"] else f"next {until(schedule.get('next_due'))}"
    return f"schedule {schedule['name']} ({when}): {upcoming}; {ledger_text(schedule['ticks'])}"


def probe_text(plugin: dict[str, Any], probe: str) -> str:
    """`health 200` or `ready 503 (all 2 workers are busy)`: what /health or /ready answers."""
    verdict = plugin[probe]
    text = f"{probe} {verdict['status_code']}"
    return text + (f" ({verdict['error']})" if verdict.get("error") else "")


def run(daemon: Daemon) -> int:
    """Run the daemon on the one event loop; whatever way it ends, no worker outlives it."""
    install_child_watcher()
    try:
        return asyncio.run(daemon.run())
    finally:
        if left := daemon.registry.kill_all() + len(daemon.registry.kill_orphans()):
            log.error(
                f"killed {left} workers still running as rrd exited",
                extra={"event": "daemon.orphans_killed", "workers": left},
            )


@contextlib.contextmanager
def claimed_pidfile(path: str | None) -> Iterator[None]:
    """Hold `path` with our pid for as long as rrd runs: claimed under an exclusive lock (a
    live rrd holding it means we must not start; a dead one's is taken over), never through a
    symlink, and removed at the end only while it is still ours."""
    if path is None:
        yield
        return
    fd = _claim(path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            mine, there = os.fstat(fd), os.lstat(path)
            same = (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)
            if same and Path(path).read_text().split() == [str(os.getpid())]:
                os.unlink(path)
        os.close(fd)  # the lock goes with it


def _claim(path: str) -> int:
    """The open, locked pidfile at `path`, holding our pid."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    for _ in range(10):
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            if os.path.islink(path):
                raise UsageError(
                    f"refusing the pidfile {path}: it is a symlink (to {os.readlink(path)}); "
                    "rrd does not write through one"
                ) from None
            raise UsageError(f"cannot write pidfile {path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UsageError(f"refusing the pidfile {path}: it is {kind_of(info.st_mode)}")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
                raise UsageError(
                    f"rrd {holder} already runs with the pidfile {path}; stop it first "
                    f"(`rrd stop --pidfile {path}`) or give another --pidfile"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                there = os.lstat(path)
                if (there.st_dev, there.st_ino) == (info.st_dev, info.st_ino):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                    return fd
            os.close(fd)  # removed or replaced as we locked it: claim the new one
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise UsageError(f"cannot claim the pidfile {path}: it keeps being replaced")


def main(early: EarlySignals | None = None) -> None:
    """Entry point: one line and a sysexits code for every error a user can cause.

    `early` holds the signals caught since rrd started (see rrd.__main__)."""
    try:
        cli.main(prog_name="rrd", standalone_mode=False, obj=early)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EX_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except RrdError as exc:
        click.echo(f"rrd: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        import traceback

        traceback.print_exc()
        click.echo("rrd: internal error (the traceback above is a bug in rrd)", err=True)
        sys.exit(EX_SOFTWARE)
