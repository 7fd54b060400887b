"""The docs cover the code, and never drift from it.

- every config key (`iter_settings` with the installed plugins' sections) is in the example
  config etc/rrd/rr.yaml, set or commented out at its place, and has an entry in rr.yaml(5);
- every click command and option is in rrd(8);
- the committed man pages are byte for byte what `tools/man.py` writes now (`make man`);
- `mandoc -T lint -W warning` finds nothing in them;
- `rrd config check` accepts the example config, which still runs two workers every second.
"""

# setting() returns a dataclasses.field, as RUF009 cannot know.

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from rrd.cli import cli
from rrd.config import Duration, PoolConfig, iter_settings, load_config, setting
from rrd.plugins import registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "etc" / "rrd" / "rr.yaml"
MAN = ROOT / "man"
PAGES = ("rrd.8", "rr.yaml.5")


def installed_settings() -> dict[str, str]:
    """Every documented key -> its default, as `rrd config docs` lists them."""
    sections = registry.config_sections(registry.installed())
    return {doc.key: doc.default for doc in iter_settings(sections)}


# -- The example config: which keys it mentions, set or commented out ----------------------


@dataclass(frozen=True)
class Mention:
    """A key written in a YAML file, or shown in a comment as `# key: value`."""

    path: str
    value: str
    commented: bool
    line: int


_KEY = re.compile(r"(?P<key>[A-Za-z_][\w-]*):(?:[ \t]+(?P<value>.*))?$")
_TRAILING_COMMENT = re.compile(r"\s+#.*$")


def mentions(text: str) -> dict[str, Mention]:
    """Every key of a block-style YAML text by its dotted path, set or commented out.

    A commented key's indentation counts the spaces after its `# ` too, so that

        server:
          # on_init:
          #   command: x

    gives server.on_init and server.on_init.command. The path comes from the indentation of
    the keys above, set or commented; a comment that is not `key: value` (prose) is skipped
    and changes no path.
    """
    found: dict[str, Mention] = {}
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        commented = body.startswith("#")
        if commented:
            body = body[1:]
            body = body[1:] if body.startswith(" ") else body  # the space after `#`
            inner = body.lstrip(" ")
            indent += len(body) - len(inner)
            body = inner
        match = _KEY.match(body)
        if match is None:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = match["key"]
        path = ".".join([*(name for _, name in stack), key])
        stack.append((indent, key))
        value = _TRAILING_COMMENT.sub("", match["value"] or "").strip()
        found.setdefault(path, Mention(path, value, commented, number))
    return found


def _matches(key: str, path: str) -> bool:
    """`logs.channels.*.mode` is written as `logs.channels.http.mode`."""
    pattern = r"\.".join("[^.]+" if part == "*" else re.escape(part) for part in key.split("."))
    return re.fullmatch(pattern, path) is not None


def missing_in_yaml(keys: Iterable[str], text: str) -> list[str]:
    """The keys that the YAML text neither sets nor shows commented out at their place."""
    paths = list(mentions(text))
    return [key for key in keys if not any(_matches(key, path) for path in paths)]


_LITERAL_DEFAULT_EXCEPT = {"required", "absent", ""}


def wrong_defaults(settings: dict[str, str], text: str) -> list[str]:
    """Commented-out keys whose value is not the default `rrd config docs` gives."""
    wrong = []
    for path, mention in mentions(text).items():
        default = settings.get(path)
        if not mention.commented or default in _LITERAL_DEFAULT_EXCEPT or default is None:
            continue
        if mention.value != default:
            wrong.append(f"line {mention.line}: {path}: {mention.value!r}, default {default!r}")
    return wrong


def _roff(text: str) -> str:
    return text.replace("-", "\\-")


def missing_in_man5(keys: Iterable[str], page: str) -> list[str]:
    """The keys without an entry of their own in rr.yaml(5): a heading, or a tagged item."""
    missing = []
    for key in keys:
        literal = re.escape(_roff(key))
        entry = rf"^(?:\.SS {literal}|\\fB{literal}\\fR \()"
        if re.search(entry, page, re.MULTILINE) is None:
            missing.append(key)
    return missing


@dataclass(frozen=True)
class MadeUpConfig:
    """A section no plugin has, with a key nowhere documented."""

    frobnicate: Duration = setting(1.0, "Not a real key.")
    pool: PoolConfig = setting(PoolConfig(), "A pool.")


def test_every_key_is_in_the_example_config() -> None:
    settings = installed_settings()
    assert missing_in_yaml(settings, EXAMPLE.read_text()) == []


def test_commented_keys_show_their_defaults() -> None:
    assert wrong_defaults(installed_settings(), EXAMPLE.read_text()) == []


def test_every_key_has_an_entry_in_rr_yaml_5() -> None:
    page = (MAN / "rr.yaml.5").read_text()
    assert missing_in_man5(installed_settings(), page) == []


def test_a_key_nowhere_documented_is_caught() -> None:
    sections = {**registry.config_sections(registry.installed()), "madeup": MadeUpConfig}
    keys = [doc.key for doc in iter_settings(sections)]
    new = [key for key in keys if key.split(".")[0] == "madeup"]
    assert "madeup.frobnicate" in new and "madeup.pool.num_workers" in new
    assert missing_in_yaml(keys, EXAMPLE.read_text()) == new
    assert missing_in_man5(keys, (MAN / "rr.yaml.5").read_text()) == new


def test_a_key_counts_only_at_its_own_place() -> None:
    text = (
        "server:\n"
        '  command: "python3 worker.py"   # num_workers: 2\n'
        "  # num_workers: 2\n"
        "  env:\n"
        "    num_workers: 2\n"
        "ticker:\n"
        "  # The pool. num_workers: 0 means one per CPU.\n"
        "  pool:\n"
        "    max_jobs: 0\n"
        "  # interval: 1s\n"
    )
    keys = ["server.command", "ticker.pool.num_workers", "ticker.pool.max_jobs", "ticker.interval"]
    assert missing_in_yaml(keys, text) == ["ticker.pool.num_workers"]
    found = mentions(text)
    assert found["ticker.interval"].commented and not found["ticker.pool.max_jobs"].commented
    assert "server.num_workers" in found and "server.env.num_workers" in found


def test_a_commented_block_nests_by_the_indentation_after_the_hash() -> None:
    text = (
        "server:\n"
        "  # on_init:\n"
        '  #   command: "x"    # required\n'
        "  #   # Kill it after this long.\n"
        "  #   exec_timeout: 1m\n"
        "  # user: ''\n"
        "logs:\n"
        "  level: info\n"
    )
    found = mentions(text)
    assert set(found) == {
        "server",
        "server.on_init",
        "server.on_init.command",
        "server.on_init.exec_timeout",
        "server.user",
        "logs",
        "logs.level",
    }
    assert found["server.on_init.command"].value == '"x"'
    settings = {"server.on_init.exec_timeout": "2m", "logs.level": "warn"}
    assert wrong_defaults(settings, text) == [
        "line 5: server.on_init.exec_timeout: '1m', default '2m'"
    ]


def test_a_sectionmap_key_matches_any_name() -> None:
    text = "logs:\n  channels:\n    http:\n      # mode: production\n"
    assert missing_in_yaml(["logs.channels.*.mode", "logs.channels.*.level"], text) == [
        "logs.channels.*.level"
    ]


# -- rrd(8): every command and option ------------------------------------------------------


def commands(
    command: click.Command = cli, path: str = "rrd"
) -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            if not sub.hidden:
                yield from commands(sub, f"{path} {name}")


def _man_section(page: str, macro: str, title: str) -> str:
    """The roff between `.SH title` (or `.SS`) and the next heading of that level or above."""
    heading = f'.{macro} "{title}"' if " " in title else f".{macro} {title}"
    start = page.index(heading + "\n")
    stop = re.compile(r"^\.(SH|SS) " if macro == "SS" else r"^\.SH ", re.MULTILINE)
    after = stop.search(page, start + len(heading))
    return page[start : after.start() if after else len(page)]


def test_every_command_and_option_is_in_rrd_8() -> None:
    page = (MAN / "rrd.8").read_text()
    options_section = _man_section(page, "SH", "OPTIONS")
    help_names = set(cli.context_settings["help_option_names"])
    for name in ("--version", *help_names):
        assert f"\\fB{_roff(name)}\\fR" in page, name
    checked = 0
    for path, command in commands():
        if command is cli:
            continue
        own = _man_section(page, "SS", path)
        assert f"\\fB{_roff(path)}\\fR" in own, path  # its usage line
        for param in command.params:
            if isinstance(param, click.Argument):
                assert f"\\fI{param.human_readable_name}\\fR" in own, (path, param.name)
                continue
            if not isinstance(param, click.Option) or param.hidden:
                continue
            # Each option is on the command's usage line, and described under the command
            # or, when several commands share it, under OPTIONS.
            assert f"[\\fB{_roff(param.opts[0])}\\fR" in own, (path, param.opts)
            for opt in (*param.opts, *param.secondary_opts):
                written = f"\\fB{_roff(opt)}\\fR"
                assert written in own or written in options_section, (path, opt)
            if param.help:
                first_words = " ".join(param.help.split()[:3])
                assert _roff(first_words) in own or _roff(first_words) in options_section
            checked += 1
    assert checked > 20  # the walk did find the commands' options


# -- The pages are what tools/man.py writes, and mandoc finds nothing in them ---------------


def test_the_committed_man_pages_are_what_make_man_writes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "man.py"), str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    for name in PAGES:
        fresh, committed = (tmp_path / name).read_bytes(), (MAN / name).read_bytes()
        assert fresh == committed, f"man/{name} is stale: run `make man` and commit it"


@pytest.mark.parametrize("name", PAGES)
def test_mandoc_finds_nothing_to_say(name: str) -> None:
    if shutil.which("mandoc") is None:
        pytest.skip("mandoc is not installed (apt-get install mandoc; .ci/run installs it)")
    result = subprocess.run(
        ["mandoc", "-T", "lint", "-W", "warning", str(MAN / name)],
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# -- The example config works -------------------------------------------------------------


def test_config_check_accepts_the_example_config() -> None:
    # As `make run` does: the venv's python3 comes first (the example's command is python3).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-m", "rrd", "config", "check", "-c", str(EXAMPLE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{EXAMPLE}: ok"
    assert "warning" not in result.stderr  # no RoadRunner key rrd ignores is set


def test_the_example_config_runs_two_workers_every_second() -> None:
    config = load_config(EXAMPLE, sections=registry.config_sections(registry.installed()))
    ticker = config.sections["ticker"]
    assert (ticker.interval, ticker.pool.num_workers) == (1.0, 2)
    assert config.server.command == ("python3", "examples/ticker_app.py")
