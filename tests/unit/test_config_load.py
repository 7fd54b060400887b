"""load_config: valid files read as meant, and every fault named by file, line and dotted key."""

# setting() returns a dataclasses.field, as RUF009 cannot know.

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrd.config import (
    Config,
    Duration,
    LimitsConfig,
    LogsConfig,
    OnInitConfig,
    PoolConfig,
    RpcConfig,
    ServerConfig,
    Size,
    load_config,
    setting,
)
from rrd.errors import EX_CONFIG, ConfigError


@dataclass(frozen=True)
class DemoConfig:
    """A plugin section such as the ticker's, under another name."""

    interval: Duration = setting(1.0, "Time between two runs.", minimum=0)
    overlap: Literal["skip", "parallel"] = setting("skip", "What to do with overlapping runs.")
    flag: bool = setting(False, "A switch.")
    ratio: float = setting(0.5, "A fraction.", minimum=0, maximum=1)
    size: Size = setting(1024, "Largest payload.", minimum=1)
    name: str = setting("", "A name.")
    pool: PoolConfig = setting(PoolConfig(), "The demo's pool.")


@dataclass(frozen=True)
class RangeConfig:
    """A section that checks its fields together."""

    low: int = setting(1, "The low end.")
    high: int = setting(2, "The high end.")

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low must not exceed high")


SECTIONS: dict[str, type] = {"demo": DemoConfig, "range": RangeConfig}
V = 'version: "3"\n'


def write(tmp_path: Path, text: str, name: str = ".rr.yaml") -> Path:
    # `V + """..."""` joins an unindented line to an indented block: dedent the block alone.
    head = V if text.startswith(V) else ""
    path = tmp_path / name
    path.write_text(head + textwrap.dedent(text[len(head) :]), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **kwargs: Any) -> Config:
    kwargs.setdefault("environ", {})
    kwargs.setdefault("sections", SECTIONS)
    return load_config(write(tmp_path, text), **kwargs)


# ---------------------------------------------------------------------------------------------
# Invalid files: (id, text, load_config kwargs, dotted key, line, message).
# `line` None with `-o` means the fault is in an override.

INVALID: list[tuple[str, str, dict[str, Any], str | None, int | None, str]] = [
    (
        "unknown-section",
        V + "demoo:\n  interval: 1s\n",
        {},
        "demoo",
        2,
        "unknown section 'demoo'; did you mean 'demo'?",
    ),
    (
        "unknown-section-far",
        V + "http:\n  address: x\n",
        {},
        "http",
        2,
        "unknown section 'http'; expected one of: demo, logs, metrics, range, rpc, server, status, "
        "version",
    ),
    (
        "unknown-nested-key",
        V + "demo:\n  pool:\n    num_worker: 2\n",
        {},
        "demo.pool.num_worker",
        4,
        "unknown key; did you mean 'num_workers'?",
    ),
    (
        "unknown-server-key",
        V + "server:\n  comand: php w.php\n",
        {},
        "server.comand",
        3,
        "unknown key; did you mean 'command'?",
    ),
    (
        "unknown-key-listed",
        V + "logs:\n  zzz: 1\n",
        {},
        "logs.zzz",
        3,
        "unknown key; expected one of: channels, encoding, err_output, file_logger_options, "
        "journal, level, line_ending, mode, output",
    ),
    (
        "unknown-supervisor-key",
        V + "demo:\n  pool:\n    supervisor:\n      ttll: 1s\n",
        {},
        "demo.pool.supervisor.ttll",
        5,
        "unknown key; did you mean 'ttl'?",
    ),
    (
        "duplicate-key",
        V + "server:\n  user: a\n  user: b\n",
        {},
        "server.user",
        4,
        "duplicate key (first at line 3)",
    ),
    (
        "duplicate-section",
        V + "logs: {}\nrpc: {}\nlogs: {}\n",
        {},
        "logs",
        4,
        "duplicate key (first at line 2)",
    ),
    (
        "duplicate-version",
        'version: "3"\nversion: "3"\n',
        {},
        "version",
        2,
        "duplicate key (first at line 1)",
    ),
    (
        "string-for-int",
        V + 'demo:\n  pool:\n    num_workers: "4"\n',
        {},
        "demo.pool.num_workers",
        4,
        'expected an integer, got string "4"; write 4 without quotes',
    ),
    (
        "bool-for-int",
        V + "demo:\n  pool:\n    num_workers: true\n",
        {},
        "demo.pool.num_workers",
        4,
        "expected an integer, got true",
    ),
    (
        "float-for-int",
        V + "demo:\n  pool:\n    max_jobs: 1.5\n",
        {},
        "demo.pool.max_jobs",
        4,
        "expected an integer, got number 1.5",
    ),
    (
        "null-for-int",
        V + "demo:\n  pool:\n    max_jobs:\n",
        {},
        "demo.pool.max_jobs",
        4,
        "expected an integer, got nothing",
    ),
    (
        "list-for-str",
        V + "server:\n  user: [a]\n",
        {},
        "server.user",
        3,
        "expected a string, got a list",
    ),
    (
        "float-for-str",
        V + "server:\n  user: 1.5\n",
        {},
        "server.user",
        3,
        "expected a string, got number 1.5; put the value in quotes",
    ),
    (
        "mapping-for-duration",
        V + "demo:\n  interval:\n    a: 1\n",
        {},
        "demo.interval",
        3,
        'expected a duration, as "5s", got a mapping',
    ),
    ("scalar-for-section", V + "server: 5\n", {}, "server", 2, "expected a mapping, got integer 5"),
    (
        "list-for-env",
        V + "server:\n  env: [A]\n",
        {},
        "server.env",
        3,
        "expected a mapping of names to strings, got a list",
    ),
    (
        "quoted-bool",
        V + 'demo:\n  flag: "true"\n',
        {},
        "demo.flag",
        3,
        'expected true or false, got string "true"; write true without quotes',
    ),
    (
        "negative-count",
        V + "demo:\n  pool:\n    max_jobs: -1\n",
        {},
        "demo.pool.max_jobs",
        4,
        "must be at least 0, got -1",
    ),
    (
        "negative-memory",
        V + "demo:\n  pool:\n    supervisor:\n      max_worker_memory: -5\n",
        {},
        "demo.pool.supervisor.max_worker_memory",
        5,
        "must be at least 0, got -5",
    ),
    (
        "negative-duration",
        V + "demo:\n  interval: -1s\n",
        {},
        "demo.interval",
        3,
        "must be at least 0s, got -1s",
    ),
    (
        "tiny-watch-tick",
        V + "demo:\n  pool:\n    supervisor:\n      watch_tick: 1ms\n",
        {},
        "demo.pool.supervisor.watch_tick",
        5,
        "must be at least 100ms, got 1ms",
    ),
    (
        "above-maximum",
        V + "demo:\n  ratio: 1.5\n",
        {},
        "demo.ratio",
        3,
        "must be at most 1, got 1.5",
    ),
    (
        "bad-duration",
        V + "demo:\n  interval: 5x\n",
        {},
        "demo.interval",
        3,
        'bad duration "5x": unknown unit "x"; use ns, us, ms, s, m or h',
    ),
    (
        "bare-int-duration",
        V + "demo:\n  pool:\n    allocate_timeout: 5\n",
        {},
        "demo.pool.allocate_timeout",
        4,
        'bad duration "5": durations need a unit, as "5s"',
    ),
    (
        "bare-string-duration",
        V + 'demo:\n  interval: "5"\n',
        {},
        "demo.interval",
        3,
        'bad duration "5": durations need a unit, as "5s"',
    ),
    (
        "sexagesimal-duration",
        V + "demo:\n  interval: 1:30\n",
        {},
        "demo.interval",
        3,
        'bad duration "1:30"',
    ),
    (
        "bool-duration",
        V + "demo:\n  interval: true\n",
        {},
        "demo.interval",
        3,
        'expected a duration, as "5s", got true',
    ),
    ("bad-size", V + "demo:\n  size: 10K\n", {}, "demo.size", 3, 'bad size "10K": unknown unit'),
    (
        "size-below-minimum",
        V + "demo:\n  size: 0\n",
        {},
        "demo.size",
        3,
        "must be at least 1, got 0",
    ),
    (
        "empty-command",
        V + 'server:\n  command: ""\n',
        {},
        "server.command",
        3,
        'expected a command, got string ""; leave the key out instead',
    ),
    (
        "empty-command-list",
        V + "server:\n  command: []\n",
        {},
        "server.command",
        3,
        "expected a command, got an empty list",
    ),
    (
        "empty-on-init-command",
        V + "server:\n  on_init:\n    command: ''\n",
        {},
        "server.on_init.command",
        4,
        'expected a command, got string ""',
    ),
    (
        "empty-command-from-env",
        V + "server:\n  command: ${CMD}\n",
        {},
        "server.command",
        3,
        'expected a command, got string "${CMD}"',
    ),
    (
        "command-bad-quoting",
        V + "server:\n  command: php 'w.php\n",
        {},
        "server.command",
        3,
        'cannot split "php \'w.php" into words: No closing quotation',
    ),
    (
        "command-item-mapping",
        V + "server:\n  command:\n    - php\n    - {a: 1}\n",
        {},
        "server.command[1]",
        5,
        "expected a string, got a mapping",
    ),
    (
        "on-init-missing-command",
        V + "server:\n  on_init:\n    exec_timeout: 1s\n",
        {},
        "server.on_init.command",
        3,
        "missing; this key is required",
    ),
    (
        "missing-version",
        "server: {}\nlogs: {}\n",
        {},
        "version",
        1,
        'missing; write version: "3" at the top',
    ),
    (
        "unquoted-version",
        "# rrd\nversion: 3\n",
        {},
        "version",
        2,
        'expected a string, got 3 unquoted; write version: "3"',
    ),
    (
        "unquoted-version-27",
        "version: 2.7\n",
        {},
        "version",
        1,
        'expected a string, got 2.7 unquoted; write version: "2.7"',
    ),
    (
        "unsupported-version",
        "version: '2'\n",
        {},
        "version",
        1,
        'unsupported version "2"; rrd reads version "3"',
    ),
    (
        "version-mapping",
        "version: {a: 1}\n",
        {},
        "version",
        1,
        'expected a string; write version: "3"',
    ),
    (
        "bad-yaml",
        V + "server:\n  command: [php, w.php\nlogs: {}\n",
        {},
        None,
        4,
        "bad YAML: expected ',' or ']', but got ':'",
    ),
    (
        "bad-yaml-indent",
        V + "server:\n  user: a\n   group: b\n",
        {},
        None,
        4,
        "bad YAML: mapping values are not allowed here",
    ),
    (
        "tab-indent",
        V + "server:\n\tuser: a\n",
        {},
        None,
        3,
        "bad YAML: found character '\\t' that cannot start any token",
    ),
    ("int-key", V + "server:\n  1: x\n", {}, "server.1", 3, "keys must be strings, got integer 1"),
    (
        "bool-key",
        V + "server:\n  true: x\n",
        {},
        "server.true",
        3,
        "keys must be strings, got true",
    ),
    (
        "yes-is-not-bool",
        V + "demo:\n  flag: yes\n",
        {},
        "demo.flag",
        3,
        'expected true or false, got string "yes"; booleans are written true or false',
    ),
    ("on-is-a-string-key", V + "on: push\n", {}, "on", 2, "unknown section 'on'"),
    (
        "leading-zero-is-not-octal",
        V + "demo:\n  pool:\n    max_jobs: 0755\n",
        {},
        "demo.pool.max_jobs",
        4,
        'expected an integer, got string "0755"; a leading zero is not octal here: '
        "write 755 or 0o755",
    ),
    (
        "bad-choice",
        V + "demo:\n  overlap: skp\n",
        {},
        "demo.overlap",
        3,
        "expected one of: skip, parallel, got string \"skp\"; did you mean 'skip'?",
    ),
    (
        "choice-not-string",
        V + "logs:\n  level: 1\n",
        {},
        "logs.level",
        3,
        "expected one of: debug, info, warn, warning, error, got integer 1",
    ),
    (
        "bad-relay",
        V + "server:\n  relay: tcp://127.0.0.1:7000\n",
        {},
        "server.relay",
        3,
        'expected one of: pipes, got string "tcp://127.0.0.1:7000"',
    ),
    (
        "bad-listen",
        V + "rpc:\n  listen: 6001\n",
        {},
        "rpc.listen",
        3,
        'expected "tcp://HOST:PORT" or "unix:///path/to/socket", got "6001"',
    ),
    (
        "env-value-list",
        V + "server:\n  env:\n    A: [1]\n",
        {},
        "server.env.A",
        4,
        "expected a string, got a list",
    ),
    (
        "env-key-cases-collide",
        V + "server:\n  env:\n    path: a\n    PATH: b\n",
        {},
        "server.env.PATH",
        5,
        "duplicate variable once upper-cased (first at line 4)",
    ),
    (
        "bad-reference",
        V + 'server:\n  user: "${USER"\n',
        {},
        "server.user",
        3,
        'bad reference "${USER": write $NAME, ${NAME} or ${NAME:-default}',
    ),
    (
        "nested-default",
        V + "server:\n  user: ${A:-$B}\n",
        {},
        "server.user",
        3,
        'bad reference "${A:-$B}": a default is plain text, without $',
    ),
    (
        "expanded-not-int",
        V + "demo:\n  pool:\n    num_workers: ${W:-many}\n",
        {},
        "demo.pool.num_workers",
        4,
        'expected an integer, got string "many"',
    ),
    (
        "expanded-bare-duration",
        V + "demo:\n  interval: ${T:-5}\n",
        {},
        "demo.interval",
        3,
        'bad duration "5": durations need a unit, as "5s"',
    ),
    ("post-init", V + "range:\n  low: 5\n  high: 1\n", {}, "range", 2, "low must not exceed high"),
    (
        "unsupported-tag",
        V + "server:\n  user: !!binary aGVsbG8=\n",
        {},
        "server.user",
        3,
        "unsupported YAML tag tag:yaml.org,2002:binary",
    ),
    (
        "bad-explicit-int",
        V + "demo:\n  pool:\n    max_jobs: !!int many\n",
        {},
        "demo.pool.max_jobs",
        4,
        'bad !!int value "many"',
    ),
    ("merge-scalar", V + "logs:\n  <<: 5\n", {}, "logs", 3, "<< merges only mappings"),
    (
        "recursive-alias",
        V + "server:\n  command: &a [php, *a]\n",
        {},
        "server.command[1]",
        3,
        "an alias refers to a value that contains it",
    ),
    (
        "top-level-list",
        "- version: '3'\n",
        {},
        None,
        1,
        "expected a mapping of sections, got a list",
    ),
    (
        "o-unknown-key",
        V,
        {"overrides": ["demo.pool.num_worker=2"]},
        "demo.pool.num_worker",
        None,
        "unknown key; did you mean 'num_workers'?",
    ),
    (
        "o-unknown-section",
        V,
        {"overrides": ["dmo.interval=1s"]},
        "dmo",
        None,
        "unknown section 'dmo'; did you mean 'demo'?",
    ),
    (
        "o-bad-int",
        V,
        {"overrides": ["demo.pool.num_workers=abc"]},
        "demo.pool.num_workers",
        None,
        'expected an integer, got string "abc"',
    ),
    (
        "o-bad-bool",
        V,
        {"overrides": ["demo.flag=yes"]},
        "demo.flag",
        None,
        'expected true or false, got string "yes"',
    ),
    (
        "o-bare-duration",
        V,
        {"overrides": ["demo.interval=5"]},
        "demo.interval",
        None,
        'bad duration "5": durations need a unit, as "5s"',
    ),
    (
        "o-no-equals",
        V,
        {"overrides": ["demo.interval"]},
        None,
        None,
        'expected key.path=value, got "demo.interval"',
    ),
    (
        "o-empty-part",
        V,
        {"overrides": ["demo..interval=1s"]},
        None,
        None,
        'expected key.path=value, got "demo..interval=1s"',
    ),
    (
        "o-below-scalar",
        V,
        {"overrides": ["demo.interval.x=1"]},
        "demo.interval",
        None,
        "'interval' has no keys below it",
    ),
    (
        "o-below-env-value",
        V,
        {"overrides": ["server.env.A.B=1"]},
        "server.env.A",
        None,
        "an environment variable has no keys below it",
    ),
    (
        "o-bad-flow",
        V,
        {"overrides": ["server.command=[php, w.php"]},
        "server.command",
        None,
        "bad YAML: expected ',' or ']'",
    ),
    (
        "o-on-init-without-command",
        V,
        {"overrides": ["server.on_init.exec_timeout=1s"]},
        "server.on_init.command",
        None,
        "missing; this key is required",
    ),
    (
        "frame-size-below-minimum",
        V + "demo:\n  pool:\n    max_frame_size: 512\n",
        {},
        "demo.pool.max_frame_size",
        4,
        "must be at least 1KiB, got 512",
    ),
    (
        "reply-size-below-frame-size",
        V + "demo:\n  pool:\n    max_frame_size: 2MiB\n    max_reply_size: 1MiB\n",
        {},
        "demo.pool.max_reply_size",
        5,
        "must be at least max_frame_size (2MiB), got 1MiB",
    ),
    (
        "reply-size-below-default-frame-size",
        V + "demo:\n  pool:\n    num_workers: 1\n    max_reply_size: 32MiB\n",
        {},
        "demo.pool.max_reply_size",
        5,
        "must be at least max_frame_size (64MiB), got 32MiB",
    ),
    (
        "frame-size-above-default-reply-size",
        V + "demo:\n  pool:\n    max_frame_size: 1GiB\n",
        {},
        "demo.pool.max_reply_size",
        3,  # not written: the line of its section
        "must be at least max_frame_size (1GiB), got 256MiB",
    ),
    (
        "o-reply-size-below-frame-size",
        V + "demo:\n  pool:\n    max_frame_size: 2MiB\n",
        {"overrides": ["demo.pool.max_reply_size=1MiB"]},
        "demo.pool.max_reply_size",
        None,
        "must be at least max_frame_size (2MiB), got 1MiB",
    ),
    (
        "kill-timeout-negative",
        V + "demo:\n  pool:\n    kill_timeout: -1s\n",
        {},
        "demo.pool.kill_timeout",
        4,
        "must be at least 0s, got -1s",
    ),
    (
        "command-word-nul",
        V + 'server:\n  command: [php, "a\\0b"]\n',
        {},
        "server.command[1]",
        3,
        "a word must not hold NUL",
    ),
    (
        "empty-log-output",
        V + 'logs:\n  output: ""\n',
        {},
        "logs.output",
        3,
        'must not be empty, got string ""',
    ),
]


@pytest.mark.parametrize(
    ("text", "kwargs", "key", "line", "message"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid(
    tmp_path: Path,
    text: str,
    kwargs: dict[str, Any],
    key: str | None,
    line: int | None,
    message: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, **kwargs)
    err = caught.value
    assert err.key == key
    assert err.line == line
    assert err.exit_code == EX_CONFIG
    from_override = "overrides" in kwargs and err.path == "-o"
    where = "-o" if from_override else str(tmp_path / ".rr.yaml")
    if line is not None:
        where += f":{line}"
    prefix = f"{where}: {key}: " if key else f"{where}: "
    assert str(err).startswith(prefix + message), str(err)
    assert "\n" not in str(err)


def test_invalid_case_count() -> None:
    assert len(INVALID) >= 40
    assert len({case[0] for case in INVALID}) == len(INVALID)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml", environ={})
    assert caught.value.line is None and caught.value.key is None
    assert str(caught.value) == (
        f"{tmp_path}/nope.yaml: cannot read {tmp_path}/nope.yaml: No such file or directory"
    )


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Is a directory"):
        load_config(tmp_path, environ={})


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.line is None
    assert 'the file is empty; it needs at least version: "3"' in str(caught.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / ".rr.yaml"
    path.write_bytes(b'version: "3"\nserver:\n  user: \xff\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.line == 3
    assert "not UTF-8 (byte 0xff)" in str(caught.value)


def test_unprintable_character(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, V + "server:\n  user: a\x07b\n")
    assert caught.value.line == 3
    assert "bad YAML: special characters are not allowed character U+0007" in str(caught.value)


def test_multiple_documents(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, V + "---\n" + V)
    assert caught.value.line == 2
    assert str(caught.value).endswith(
        "bad YAML: expected a single document in the stream, but found another document"
    )


def test_dotenv_bad_line(tmp_path: Path) -> None:
    env = write(tmp_path, "A=1\nthis is wrong\n", ".env")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, V, dotenv=env)
    assert (caught.value.path, caught.value.line) == (str(env), 2)
    assert str(caught.value) == f'{env}:2: expected KEY=VALUE, got "this is wrong"'


def test_dotenv_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*missing\.env: No such file"):
        load(tmp_path, V, dotenv="missing.env", workdir=tmp_path)


# ---------------------------------------------------------------------------------------------
# Valid files.


def test_minimal(tmp_path: Path) -> None:
    config = load(tmp_path, V, workdir=tmp_path)
    assert config == Config(
        version="3",
        source=tmp_path / ".rr.yaml",
        workdir=tmp_path,
        server=ServerConfig(),
        logs=LogsConfig(),
        rpc=None,
        sections={},
        dotenv={},
        warnings=(),
    )


def test_defaults_are_roadrunners() -> None:
    pool = PoolConfig()
    assert (pool.num_workers, pool.max_jobs, pool.max_queue_size) == (0, 0, 0)
    assert (pool.allocate_timeout, pool.destroy_timeout, pool.reset_timeout) == (60, 60, 60)
    assert (pool.kill_timeout, pool.max_frame_size, pool.max_reply_size) == (5, 2**26, 2**28)
    assert pool.command == () and pool.env == {} and pool.debug is False
    assert pool.supervisor == LimitsConfig(5.0, 0.0, 0.0, 0.0, 0)
    assert ServerConfig().relay == "pipes" and ServerConfig().on_init is None
    assert LogsConfig() == LogsConfig("production", "info", "stderr")
    assert RpcConfig().listen == "tcp://127.0.0.1:6001"
    assert PoolConfig().env is not PoolConfig().env  # each instance owns its map


def test_version_27_warns(tmp_path: Path) -> None:
    config = load(tmp_path, "version: '2.7'\n")
    assert config.version == "2.7"
    assert len(config.warnings) == 1
    assert 'version "2.7" is read as version "3"' in config.warnings[0]


def test_full_file(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        version: "3"
        server:
          command: "python3 -m app.worker --name 'two words'"
          env:
            app_env: prod
            Workers: 4
          user: 1000
          on_init:
            command: [php, bin/console, cache:warmup]
            exec_timeout: 2m
            exit_on_error: true
        logs:
          mode: development
          level: WARN
          output: /var/log/rrd.log
        rpc:
          listen: unix:///run/rrd.sock
        demo:
          interval: 1m30s
          overlap: parallel
          flag: TRUE
          ratio: 1
          size: 64KiB
          pool:
            num_workers: 4
            max_jobs: 100
            allocate_timeout: 500ms
            command: php other.php
            env: {mode: demo}
            debug: false
            supervisor:
              ttl: 1h
              max_worker_memory: 128
        """,
    )
    assert config.server == ServerConfig(
        command=("python3", "-m", "app.worker", "--name", "two words"),
        env={"APP_ENV": "prod", "WORKERS": "4"},
        user="1000",
        on_init=OnInitConfig(("php", "bin/console", "cache:warmup"), 120.0, True, {}),
    )
    assert config.logs == LogsConfig("development", "warn", "/var/log/rrd.log")
    assert config.rpc == RpcConfig("unix:///run/rrd.sock")
    assert config.sections == {
        "demo": DemoConfig(
            interval=90.0,
            overlap="parallel",
            flag=True,
            ratio=1.0,
            size=65536,
            name="",
            pool=PoolConfig(
                num_workers=4,
                max_jobs=100,
                allocate_timeout=0.5,
                command=("php", "other.php"),
                env={"MODE": "demo"},
                supervisor=LimitsConfig(ttl=3600.0, max_worker_memory=128),
            ),
        )
    }


def test_json_is_yaml(tmp_path: Path) -> None:
    config = load(tmp_path, '{"version": "3", "demo": {"pool": {"num_workers": 2}}, "rpc": {}}')
    assert config.sections["demo"].pool.num_workers == 2
    assert config.rpc == RpcConfig()


def test_null_sections_mean_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, V + "rpc:\ndemo:\nserver:\n  env:\n")
    assert config.rpc == RpcConfig()
    assert config.sections == {"demo": DemoConfig()}
    assert config.server.env == {}


def test_absent_sections_are_absent(tmp_path: Path) -> None:
    config = load(tmp_path, V + "range: {}\n")
    assert config.rpc is None
    assert config.sections == {"range": RangeConfig()}


def test_command_list_is_used_as_is(tmp_path: Path) -> None:
    config = load(tmp_path, V + "server:\n  command: [php, 'a b.php', 5, 1.10, --x=$$y]\n")
    assert config.server.command == ("php", "a b.php", "5", "1.10", "--x=$y")


def test_command_string_is_split_without_a_shell(tmp_path: Path) -> None:
    text = V + "server:\n  command: >-\n    php -d \"memory_limit=1G\" 'my worker.php' ; rm -rf /\n"
    config = load(tmp_path, text)
    assert config.server.command == (
        "php",
        "-d",
        "memory_limit=1G",
        "my worker.php",
        ";",
        "rm",
        "-rf",
        "/",
    )


def test_env_values_are_strings_as_written(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        V
        + """\
        server:
          env:
            on: yes
            version: 1.10
            mode: 0755
            time: 1:30
            hex: 0x1F
            flag: True
            empty:
            tilde: ~
            quoted: "007"
        """,
    )
    assert config.server.env == {
        "ON": "yes",
        "VERSION": "1.10",
        "MODE": "0755",
        "TIME": "1:30",
        "HEX": "0x1F",
        "FLAG": "True",
        "EMPTY": "",
        "TILDE": "",
        "QUOTED": "007",
    }


def test_yaml_11_traps_are_avoided(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        V
        + """\
        demo:
          name: 0755
          flag: FALSE
          pool:
            max_jobs: 0o755
            max_queue_size: 0x10
        """,
    )
    demo = config.sections["demo"]
    assert demo.name == "0755"
    assert demo.flag is False
    assert demo.pool.max_jobs == 0o755
    assert demo.pool.max_queue_size == 16


def test_dates_stay_strings(tmp_path: Path) -> None:
    assert load(tmp_path, V + "demo:\n  name: 2024-01-02\n").sections["demo"].name == "2024-01-02"


def test_relative_path_is_read_from_workdir(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path, V, "etc/rr.yaml")
    config = load_config("etc/rr.yaml", workdir=tmp_path, environ={})
    assert config.source == tmp_path / "etc" / "rr.yaml"
    assert config.workdir == tmp_path
    monkeypatch.chdir(tmp_path / "etc")
    config = load_config("rr.yaml", environ={})
    assert config.source == tmp_path / "etc" / "rr.yaml"
    assert config.workdir == tmp_path / "etc"


def test_merge_keys_and_aliases(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        V
        + """\
        x-pool: &pool
          num_workers: 2
          max_jobs: 10
        demo:
          pool:
            <<: *pool
            max_jobs: 20
        """,
        sections={"demo": DemoConfig, "x-pool": PoolConfig},
    )
    assert config.sections["demo"].pool.num_workers == 2
    assert config.sections["demo"].pool.max_jobs == 20


def test_level_choices_ignore_case(tmp_path: Path) -> None:
    assert load(tmp_path, V + "logs: {level: Warning}\n").logs.level == "warning"


def test_int_for_duration_zero(tmp_path: Path) -> None:
    config = load(tmp_path, V + "demo:\n  interval: 0\n  pool: {supervisor: {ttl: '0'}}\n")
    assert config.sections["demo"].interval == 0.0
    assert config.sections["demo"].pool.supervisor.ttl == 0.0


def test_sizes(tmp_path: Path) -> None:
    assert load(tmp_path, V + "demo: {size: 512}\n").sections["demo"].size == 512
    assert load(tmp_path, V + "demo: {size: 1MB}\n").sections["demo"].size == 10**6


# Env expansion ---------------------------------------------------------------------------------

ENV = {"HOST": "example.org", "PORT": "8080", "EMPTY": "", "W": "8", "ON": "true", "T": "2s"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$HOST", "example.org"),
        ("${HOST}", "example.org"),
        ("${HOST:-x}", "example.org"),
        ("${NOPE:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${EMPTY}", ""),
        ("$NOPE", ""),
        ("${A:-x}-$PORT", "x-8080"),
        ("http://$HOST:${PORT}/x", "http://example.org:8080/x"),
        ("$$HOST", "$HOST"),
        ("cost: 5$", "cost: 5$"),
        ("${NOPE:-a b c}", "a b c"),
        ("${HOST}${PORT}", "example.org8080"),
    ],
)
def test_env_expansion(tmp_path: Path, value: str, expected: str) -> None:
    config = load(tmp_path, V + f"demo:\n  name: '{value}'\n", environ=ENV)
    assert config.sections["demo"].name == expected


def test_expansion_converts_to_field_types(tmp_path: Path) -> None:
    text = (
        V
        + """\
        demo:
          interval: ${T}
          flag: $ON
          ratio: ${RATIO:-0.25}
          size: ${SIZE:-2KiB}
          pool:
            num_workers: ${W:-4}
            max_jobs: ${JOBS:-4}
        server:
          command: ${CMD:-php worker.php}
          env:
            url: http://$HOST
        """
    )
    config = load(tmp_path, text, environ=ENV)
    demo = config.sections["demo"]
    assert (demo.interval, demo.flag, demo.ratio, demo.size) == (2.0, True, 0.25, 2048)
    assert (demo.pool.num_workers, demo.pool.max_jobs) == (8, 4)
    assert config.server.command == ("php", "worker.php")
    assert config.server.env == {"URL": "http://example.org"}


def test_keys_are_not_expanded(tmp_path: Path) -> None:
    config = load(tmp_path, V + "server:\n  env:\n    $HOST: a\n", environ=ENV)
    assert config.server.env == {"$HOST": "a"}


def test_environ_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RRD_TEST_NAME", "from-os")
    path = write(tmp_path, V + "demo:\n  name: $RRD_TEST_NAME\n")
    assert load_config(path, sections=SECTIONS).sections["demo"].name == "from-os"


# Overrides ------------------------------------------------------------------------------------


def test_overrides(tmp_path: Path) -> None:
    text = (
        V
        + """\
        server:
          command: php old.php
          env:
            path: /bin
        demo:
          interval: 1s
          pool:
            num_workers: 2
        """
    )
    config = load(
        tmp_path,
        text,
        environ=ENV,
        overrides=[
            "demo.pool.num_workers=8",
            "demo.interval=1m30s",
            "demo.flag=true",
            "demo.name=a=b",
            "server.command=php 'new worker.php'",
            "server.env.PATH=/usr/bin",
            "server.env.extra=$HOST",
            "rpc.listen=tcp://127.0.0.2:6001",
            "demo.pool.supervisor.ttl=1h",
            "demo.pool.num_workers=9",
        ],
    )
    demo = config.sections["demo"]
    assert (demo.pool.num_workers, demo.interval, demo.flag, demo.name) == (9, 90.0, True, "a=b")
    assert demo.pool.supervisor.ttl == 3600.0
    assert config.server.command == ("php", "new worker.php")
    assert config.server.env == {"PATH": "/usr/bin", "EXTRA": "example.org"}
    assert config.rpc == RpcConfig("tcp://127.0.0.2:6001")


def test_override_flow_values(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        V,
        overrides=[
            "server.command=[php, a b.php]",
            "demo.pool.env={a: 1, b: x}",
            "range={low: 3, high: 4}",
            "server.user=[not a list]",
        ],
    )
    assert config.server.command == ("php", "a b.php")
    assert config.sections["demo"].pool.env == {"A": "1", "B": "x"}
    assert config.sections["range"] == RangeConfig(3, 4)
    assert config.server.user == "[not a list]"


def test_override_creates_on_init(tmp_path: Path) -> None:
    config = load(tmp_path, V, overrides=["server.on_init.command=make warm"])
    assert config.server.on_init == OnInitConfig(("make", "warm"))


def test_override_version(tmp_path: Path) -> None:
    assert load(tmp_path, "version: '2.7'\n", overrides=["version=3"]).warnings == ()


def test_override_does_not_touch_an_aliased_value(tmp_path: Path) -> None:
    text = V + "x: &p {num_workers: 1}\ndemo: {pool: *p}\nother: {pool: *p}\n"
    config = load(
        tmp_path,
        text,
        overrides=["demo.pool.num_workers=5"],
        sections={"demo": DemoConfig, "other": DemoConfig, "x": PoolConfig},
    )
    assert config.sections["demo"].pool.num_workers == 5
    assert config.sections["other"].pool.num_workers == 1


def test_error_in_file_after_override_keeps_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(
            tmp_path, V + "demo:\n  pool:\n    max_jobs: x\n", overrides=["demo.pool.num_workers=2"]
        )
    assert (caught.value.key, caught.value.line) == ("demo.pool.max_jobs", 4)


# Dotenv ---------------------------------------------------------------------------------------


def test_dotenv(tmp_path: Path) -> None:
    write(
        tmp_path,
        """\
        # settings
        export WORKERS=3
        NAME = "from dotenv"
        HOST=from-dotenv
        """,
        ".env",
    )
    config = load(
        tmp_path,
        V + "demo:\n  name: $NAME@$HOST\n  pool: {num_workers: $WORKERS}\n",
        dotenv=".env",
        workdir=tmp_path,
        environ={"HOST": "from-environ"},
    )
    assert config.sections["demo"].name == "from dotenv@from-environ"
    assert config.sections["demo"].pool.num_workers == 3
    assert config.dotenv == {"WORKERS": "3", "NAME": "from dotenv", "HOST": "from-dotenv"}


def test_sections_must_be_dataclasses(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="must be a dataclass"):
        load(tmp_path, V, sections={"bad": dict})
    with pytest.raises(ValueError, match="may not own"):
        load(tmp_path, V, sections={"server": DemoConfig})


@pytest.mark.parametrize(
    ("text", "key", "line", "message"),
    [
        (
            V + "demo:\n  pool:\n    max_jobs: " + "9" * 2000 + "\n",
            "demo.pool.max_jobs",
            4,
            "integer too long (2000 characters)",
        ),
        (V + "demo:\n  interval: " + "9" * 5000 + "s\n", "demo.interval", 3, "too long"),
        (V + "demo:\n  size: " + "9" * 5000 + "\n", "demo.size", 3, "integer too long"),
    ],
)
def test_huge_numbers_are_faults_not_crashes(
    tmp_path: Path, text: str, key: str, line: int, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert (caught.value.key, caught.value.line) == (key, line)
    assert message in str(caught.value)


def test_huge_expanded_integer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, V + "demo:\n  pool:\n    max_jobs: $N\n", environ={"N": "9" * 5000})
    assert (caught.value.key, caught.value.line) == ("demo.pool.max_jobs", 4)


def test_nul_in_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path) + "/a\0b", environ={})


VALID = (
    V
    + """\
server:
  command: "php worker.php"
  env: {A: 1}
  on_init: {command: [make], exec_timeout: 5s}
logs: {level: info}
rpc: {listen: "tcp://127.0.0.1:6001"}
demo:
  interval: 1s
  pool: {num_workers: ${W:-2}, supervisor: {ttl: 1h}}
"""
)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_mangled_files_raise_only_config_errors(
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
) -> None:
    text = VALID
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 5))
        insert = data.draw(
            st.sampled_from(
                [
                    "",
                    ":",
                    "-",
                    "[",
                    "]",
                    "{",
                    "}",
                    "\n",
                    "  ",
                    "\t",
                    "&a",
                    "*a",
                    "<<: ",
                    "!!int ",
                    "$",
                    "${",
                    "'",
                    '"',
                    "0755",
                    "yes",
                    "1:30",
                    "-1",
                    "~",
                    "#",
                    "?",
                    ",",
                    "9" * 50,
                ]
            )
        )
        text = text[:at] + insert + text[at + cut :]
    path = tmp_path_factory.mktemp("fuzz") / ".rr.yaml"
    path.write_text(text, encoding="utf-8")
    overrides = data.draw(
        st.lists(
            st.sampled_from(
                [
                    "demo.interval=2s",
                    "server.env.B=x",
                    "demo.pool=[1]",
                    "rpc.listen=x",
                    "x=1",
                    "demo",
                ]
            ),
            max_size=2,
        )
    )
    try:
        load_config(path, sections=SECTIONS, overrides=overrides, environ={})
    except ConfigError as err:
        assert "\n" not in str(err)


# RoadRunner's zeros and the pool's limits ------------------------------------------------------


@pytest.mark.parametrize("key", ["allocate_timeout", "destroy_timeout", "reset_timeout"])
@pytest.mark.parametrize("written", ["0", "0s", "'0ms'"])
def test_a_zero_pool_timeout_means_roadrunners_60s(tmp_path: Path, key: str, written: str) -> None:
    config = load(tmp_path, V + f"demo:\n  pool:\n    {key}: {written}\n")
    assert getattr(config.sections["demo"].pool, key) == 60.0
    config = load(tmp_path, V, overrides=[f"demo.pool.{key}=0"])
    assert getattr(config.sections["demo"].pool, key) == 60.0
    assert getattr(PoolConfig(**{key: 0.0}), key) == 60.0


def test_other_zeros_stay_zero(tmp_path: Path) -> None:
    text = V + "demo:\n  pool:\n    kill_timeout: 0s\n    allocate_timeout: 1ms\n"
    pool = load(tmp_path, text).sections["demo"].pool
    assert (pool.kill_timeout, pool.allocate_timeout) == (0.0, 0.001)


def test_the_pool_limits(tmp_path: Path) -> None:
    text = V + "demo:\n  pool:\n    max_frame_size: 1KiB\n    max_reply_size: 1KiB\n"
    pool = load(tmp_path, text).sections["demo"].pool
    assert (pool.max_frame_size, pool.max_reply_size, pool.kill_timeout) == (1024, 1024, 5.0)
    text = V + "demo:\n  pool: {max_frame_size: 8MB, max_reply_size: 1GiB, kill_timeout: 1m}\n"
    pool = load(tmp_path, text).sections["demo"].pool
    assert (pool.max_frame_size, pool.max_reply_size, pool.kill_timeout) == (8 * 10**6, 2**30, 60)


# Where each key was written: Config.lines and Config.error -------------------------------------

LINES = (
    V
    + """\
server:
  command: [php, w.php]
  env:
    path: /bin
demo:

  # a comment
  pool:
    num_workers: 2
logs: {level: info}
"""
)


def test_lines_name_every_key_written(tmp_path: Path) -> None:
    config = load(tmp_path, LINES)
    assert config.lines == {
        "version": 1,
        "server": 2,
        "server.command": 3,
        "server.command[0]": 3,
        "server.command[1]": 3,
        "server.env": 4,
        "server.env.PATH": 5,  # as the loader names it: upper-cased
        "demo": 6,
        "demo.pool": 9,
        "demo.pool.num_workers": 10,
        "logs": 11,
        "logs.level": 11,
    }
    assert config.overridden == frozenset()


def test_lines_leave_out_overrides(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        LINES,
        overrides=["demo.pool.num_workers=3", "server.env.PATH=/usr/bin", "rpc.listen=unix:///s"],
    )
    assert "demo.pool.num_workers" not in config.lines and config.lines["demo.pool"] == 9
    assert "server.env.PATH" not in config.lines and config.lines["server.env"] == 4
    assert {"demo.pool.num_workers", "server.env.PATH", "rpc", "rpc.listen"} <= config.overridden


def test_config_error_names_the_line_of_the_key_or_its_nearest_written_parent(
    tmp_path: Path,
) -> None:
    config = load(tmp_path, LINES, overrides=["demo.pool.max_jobs=3"])
    path = tmp_path / ".rr.yaml"
    assert str(config.error("server.command", "bad")) == f"{path}:3: server.command: bad"
    assert str(config.error("server.command[1]", "x")) == f"{path}:3: server.command[1]: x"
    assert str(config.error("server.user", "no")) == f"{path}:2: server.user: no"
    assert str(config.error("demo.pool.env.A", "no")) == f"{path}:9: demo.pool.env.A: no"
    assert str(config.error("rpc.listen", "no")) == f"{path}: rpc.listen: no"
    assert str(config.error("demo.pool.max_jobs", "no")) == "-o: demo.pool.max_jobs: no"
    err = config.error("server.user", "no")
    assert (err.path, err.line, err.key, err.message) == (str(path), 2, "server.user", "no")
    assert err.exit_code == EX_CONFIG


POOL_KEYS = ["num_workers", "max_jobs", "allocate_timeout", "command", "env", "supervisor"]
POOL_VALUES = {
    "num_workers": "2",
    "max_jobs": "0",
    "allocate_timeout": "1s",
    "command": "php w.php",
    "env": "{A: b}",
    "supervisor": "{ttl: 1h}",
}


@given(
    st.lists(st.sampled_from(["server", "demo", "logs"]), unique=True),
    st.lists(st.sampled_from(POOL_KEYS), unique=True),
    st.lists(st.sampled_from(["", "# note", "  # indented note"]), max_size=12),
    st.data(),
)
@settings(deadline=None)
def test_every_recorded_line_holds_its_key(
    tmp_path_factory: pytest.TempPathFactory,
    sections: list[str],
    pool_keys: list[str],
    fillers: list[str],
    data: st.DataObject,
) -> None:
    body = {
        "server": ["server:", "  user: www", "  env:", "    Path: /bin"],
        "demo": ["demo:", "  pool:", *(f"    {k}: {POOL_VALUES[k]}" for k in pool_keys)],
        "logs": ["logs:", "  level: info"],
    }
    lines = ['version: "3"']
    for name in sections:
        lines += body[name]
    for filler in fillers:  # blank lines and comments anywhere after the first
        lines.insert(data.draw(st.integers(1, len(lines))), filler)
    path = tmp_path_factory.mktemp("lines") / ".rr.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = load_config(path, sections=SECTIONS, environ={})
    written = {"version", *sections}
    if "demo" in sections:
        written |= {"demo.pool", *(f"demo.pool.{k}" for k in pool_keys)}
    assert written <= set(config.lines)
    for key, line in config.lines.items():
        last = key.rsplit(".", 1)[-1].split("[")[0]
        # At the start of its line, or after `{` or `,` in flow style.
        assert re.search(rf"(?:^|[{{,])\s*{re.escape(last)}:", lines[line - 1], re.I), key
