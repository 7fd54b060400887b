"""The `rrd` command: serve, config check|docs, plugins.

Room: cli, the top. Turns every RrdError into one line on stderr and its sysexits code;
anything else escaping is a bug and exits 70 with its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from rrd import __version__
from rrd import logging as rrd_logging
from rrd.config import Config, load_config, render_docs, validate
from rrd.daemon import Daemon
from rrd.errors import EX_SOFTWARE, EX_USAGE, RrdError, UsageError
from rrd.plugins import registry
from rrd.proc import ProcessRegistry, parent_death_launcher
from rrd.signals import EarlySignals
from rrd.worker import install_child_watcher

log = logging.getLogger("rrd.cli")

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
    config_path: str, workdir: str | None, overrides: tuple[str, ...], dotenv: str | None
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


@cli.command()
@config_options
@click.option(
    "--pidfile", type=click.Path(dir_okay=False), help="Write rrd's pid here while it runs."
)
def serve(
    config_path: str,
    workdir: str | None,
    overrides: tuple[str, ...],
    dotenv: str | None,
    pidfile: str | None,
) -> None:
    """Run the server in the foreground until SIGTERM or SIGINT."""
    early = click.get_current_context().obj
    config = load(config_path, workdir, overrides, dotenv)
    if workdir:
        os.chdir(config.workdir)  # before logs.output is opened: relative paths are the workdir's
    rrd_logging.configure(config.logs.mode, config.logs.level, config.logs.output)
    code = EX_SOFTWARE
    try:
        for warning in config.warnings:
            log.warning(warning, extra={"event": "config.warning", "config": str(config.source)})
        with written_pidfile(pidfile):
            daemon = Daemon(
                config,
                registry.installed(),
                registry=ProcessRegistry(launcher=parent_death_launcher()),
                early=early if isinstance(early, EarlySignals) else None,
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
def written_pidfile(path: str | None) -> Iterator[None]:
    """Write our pid to `path` for as long as rrd runs."""
    if path is None:
        yield
        return
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        temporary.write_text(f"{os.getpid()}\n")
        temporary.replace(target)
    except OSError as exc:
        raise UsageError(f"cannot write pidfile {path}: {exc.strerror}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            target.unlink()


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
