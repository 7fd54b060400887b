"""RoadRunner's own keys that rrd accepts and ignores, and RoadRunner's log values it maps.

Every ignored key the user writes costs one warning naming file, line and dotted key; a key
left out, or a default, costs none. An ignored key's value is still checked against its type.
"""

# setting() returns a dataclasses.field, as RUF009 cannot know.

from __future__ import annotations

import logging
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from rrd.config import (
    Config,
    FileLoggerOptions,
    LogChannelConfig,
    LogsConfig,
    OnInitConfig,
    PoolConfig,
    ServerConfig,
    load_config,
    setting,
)
from rrd.config.schema import Shape, field_specs, shape_of
from rrd.errors import ConfigError
from rrd.logging import parse_level
from rrd.plugins.ticker import TickerConfig

SECTIONS: dict[str, type] = {"ticker": TickerConfig}
V = 'version: "3"\n'

IGNORES = "RoadRunner setting; rrd accepts it and ignores it"

ROADRUNNER = """\
version: "3"

server:
  command: "php worker.php"
  relay: pipes
  relay_timeout: 60s
  on_init:
    command: "php bin/console cache:warmup"
    exec_timeout: 20s
    user: www-data

logs:
  mode: production
  level: info
  encoding: json
  output: stderr
  err_output: stderr
  line_ending: "\\n"
  file_logger_options:
    log_output: /var/log/rr.log
    max_size: 10
    max_age: 24
    max_backups: 10
    compress: true
  channels:
    http:
      mode: development
      level: debug
      output: http.log
    server:
      level: panic
      file_logger_options:
        log_output: server.log

rpc:
  listen: tcp://127.0.0.1:6001

ticker:
  interval: 1s
  pool:
    num_workers: 2
    allocate_timeout: 60s
    destroy_timeout: 60s
    stream_timeout: 30s
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".rr.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **kwargs: Any) -> Config:
    kwargs.setdefault("environ", {})
    kwargs.setdefault("sections", SECTIONS)
    return load_config(write(tmp_path, text), **kwargs)


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line of `text` that starts (after indent) with `needle`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith(needle):
            return number
    raise AssertionError(needle)


def test_a_roadrunner_config_loads_with_one_warning_per_ignored_key(tmp_path: Path) -> None:
    config = load(tmp_path, ROADRUNNER)
    path = tmp_path / ".rr.yaml"
    expected = [
        (
            line_of(ROADRUNNER, "relay_timeout:"),
            "server.relay_timeout",
            "pipes need no connect timeout",
        ),
        (
            line_of(ROADRUNNER, "user: www-data"),
            "server.on_init.user",
            "on_init runs as rrd's user",
        ),
        (
            line_of(ROADRUNNER, "encoding:"),
            "logs.encoding",
            "logs.mode chooses JSON or human output",
        ),
        (
            line_of(ROADRUNNER, "err_output:"),
            "logs.err_output",
            "rrd's log has one output, logs.output",
        ),
        (
            line_of(ROADRUNNER, "line_ending:"),
            "logs.line_ending",
            "every log line ends with a newline",
        ),
        (
            line_of(ROADRUNNER, "file_logger_options:"),
            "logs.file_logger_options",
            "logs.output appends to a file; rotate it outside rrd",
        ),
        (
            line_of(ROADRUNNER, "channels:"),
            "logs.channels",
            "every plugin writes to rrd's one log, as logs.* says",
        ),
        (
            line_of(ROADRUNNER, "stream_timeout:"),
            "ticker.pool.stream_timeout",
            "rrd joins a streamed reply and never cancels one",
        ),
    ]
    assert list(config.warnings) == [
        f"{path}:{line}: {key}: {IGNORES} ({why})" for line, key, why in expected
    ]
    # What rrd acts on is read as usual; what it ignores is kept, typed, for anyone who asks.
    assert config.server.command == ("php", "worker.php")
    assert config.server.relay_timeout == 60.0
    assert config.server.on_init == OnInitConfig(
        ("php", "bin/console", "cache:warmup"), 20.0, False, {}, "www-data"
    )
    assert (config.logs.mode, config.logs.level, config.logs.output) == (
        "production",
        "info",
        "stderr",
    )
    assert config.logs.encoding == "json"
    assert config.logs.err_output == ("stderr",)
    assert config.logs.line_ending == "\n"
    assert config.logs.file_logger_options == FileLoggerOptions("/var/log/rr.log", 10, 24, 10, True)
    assert config.logs.channels == {
        "http": LogChannelConfig(mode="development", level="debug", output=("http.log",)),
        "server": LogChannelConfig(
            level="panic", file_logger_options=FileLoggerOptions(log_output="server.log")
        ),
    }
    assert config.sections["ticker"].pool.stream_timeout == 30.0
    assert config.sections["ticker"].pool.num_workers == 2


def test_the_warning_text(tmp_path: Path) -> None:
    config = load(tmp_path, V + "server:\n  relay_timeout: 5s\n")
    assert config.warnings == (
        f"{tmp_path / '.rr.yaml'}:3: server.relay_timeout: RoadRunner setting; rrd accepts it "
        "and ignores it (pipes need no connect timeout)",
    )


def test_unwritten_keys_and_defaults_warn_nothing(tmp_path: Path) -> None:
    text = V + "server:\n  command: php w.php\nlogs:\n  mode: development\nticker:\n  pool: {}\n"
    assert load(tmp_path, text).warnings == ()
    # A default-built config is what an unwritten key yields: no warning can come from it.
    assert PoolConfig().stream_timeout == 60.0 and ServerConfig().relay_timeout == 60.0
    assert LogsConfig().channels == {} and LogsConfig().encoding is None


def test_writing_the_default_still_warns(tmp_path: Path) -> None:
    # The user wrote the key, so they are told rrd does nothing with it, whatever its value.
    config = load(tmp_path, V + "ticker:\n  pool:\n    stream_timeout: 60s\n")
    assert len(config.warnings) == 1
    assert ":4: ticker.pool.stream_timeout: " in config.warnings[0]


def test_every_plugin_pool_accepts_stream_timeout(tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Other:
        pool: PoolConfig = setting(PoolConfig(), "Another plugin's pool.")

    text = V + "ticker:\n  pool:\n    stream_timeout: 1s\nother:\n  pool:\n    stream_timeout: 2s\n"
    config = load(tmp_path, text, sections={"ticker": TickerConfig, "other": Other})
    assert config.sections["other"].pool.stream_timeout == 2.0
    keys = [w.split(": ")[1] for w in config.warnings]
    assert keys == ["ticker.pool.stream_timeout", "other.pool.stream_timeout"]  # file order


def test_an_override_of_an_ignored_key_warns_on_the_command_line(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        V,
        overrides=["server.relay_timeout=5s", "logs.channels.http.level=debug"],
    )
    assert config.server.relay_timeout == 5.0
    assert config.logs.channels == {"http": LogChannelConfig(level="debug")}
    assert config.warnings == (
        f"-o: server.relay_timeout: {IGNORES} (pipes need no connect timeout)",
        f"-o: logs.channels: {IGNORES} (every plugin writes to rrd's one log, as logs.* says)",
    )


def test_version_warning_comes_first(tmp_path: Path) -> None:
    config = load(tmp_path, "version: '2.7'\nserver:\n  relay_timeout: 1s\n")
    assert 'version "2.7"' in config.warnings[0]
    assert "server.relay_timeout" in config.warnings[1] and len(config.warnings) == 2


def test_a_null_ignored_key_is_still_written(tmp_path: Path) -> None:
    config = load(tmp_path, V + "logs:\n  encoding:\n  channels:\n")
    assert config.logs.encoding is None and config.logs.channels == {}
    assert [w.split(": ")[1] for w in config.warnings] == ["logs.encoding", "logs.channels"]


# Wrong types are errors, as for any key: (id, text, dotted key, line, message).
INVALID: list[tuple[str, str, str, int, str]] = [
    (
        "relay-timeout-bare-number",
        V + "server:\n  relay_timeout: 60\n",
        "server.relay_timeout",
        3,
        'bad duration "60": durations need a unit, as "60s"',
    ),
    (
        "relay-timeout-word",
        V + "server:\n  relay_timeout: soon\n",
        "server.relay_timeout",
        3,
        'bad duration "soon"',
    ),
    (
        "relay-timeout-negative",
        V + "server:\n  relay_timeout: -1s\n",
        "server.relay_timeout",
        3,
        "must be at least 0s, got -1s",
    ),
    (
        "on-init-user-list",
        V + "server:\n  on_init:\n    command: x\n    user: [a]\n",
        "server.on_init.user",
        5,
        "expected a string, got a list",
    ),
    (
        "stream-timeout-bool",
        V + "ticker:\n  pool:\n    stream_timeout: true\n",
        "ticker.pool.stream_timeout",
        4,
        'expected a duration, as "5s", got true',
    ),
    (
        "encoding-unknown",
        V + "logs:\n  encoding: yaml\n",
        "logs.encoding",
        3,
        'expected one of: console, json, got string "yaml"',
    ),
    (
        "err-output-mapping",
        V + "logs:\n  err_output: {a: b}\n",
        "logs.err_output",
        3,
        "expected a command (a string or a list of strings), got a mapping",
    ),
    (
        "line-ending-list",
        V + "logs:\n  line_ending: [a]\n",
        "logs.line_ending",
        3,
        "expected a string, got a list",
    ),
    (
        "file-logger-options-string",
        V + "logs:\n  file_logger_options: /var/log/rr.log\n",
        "logs.file_logger_options",
        3,
        'expected a mapping, got string "/var/log/rr.log"',
    ),
    (
        "file-logger-max-size-quoted",
        V + "logs:\n  file_logger_options:\n    max_size: '10'\n",
        "logs.file_logger_options.max_size",
        4,
        'expected an integer, got string "10"',
    ),
    (
        "file-logger-unknown-key",
        V + "logs:\n  file_logger_options:\n    max_sizes: 10\n",
        "logs.file_logger_options.max_sizes",
        4,
        "unknown key; did you mean 'max_size'?",
    ),
    (
        "channels-list",
        V + "logs:\n  channels: [http]\n",
        "logs.channels",
        3,
        "expected a mapping of names to mappings, got a list",
    ),
    (
        "channel-not-mapping",
        V + "logs:\n  channels:\n    http: debug\n",
        "logs.channels.http",
        4,
        'expected a mapping, got string "debug"',
    ),
    (
        "channel-bad-mode",
        V + "logs:\n  channels:\n    http:\n      mode: loud\n",
        "logs.channels.http.mode",
        5,
        'expected one of: production, development, raw, off, none, got string "loud"',
    ),
    (
        "channel-unknown-key",
        V + "logs:\n  channels:\n    http:\n      levle: debug\n",
        "logs.channels.http.levle",
        5,
        "unknown key; did you mean 'level'?",
    ),
    (
        "mode-unknown",
        V + "logs:\n  mode: silent\n",
        "logs.mode",
        3,
        'expected one of: production, development, off, got string "silent"',
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "line", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_a_wrong_type_is_still_an_error(
    tmp_path: Path, text: str, key: str, line: int, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    err = caught.value
    assert (err.key, err.line, err.path) == (key, line, str(tmp_path / ".rr.yaml"))
    assert err.message.startswith(message), err.message


# RoadRunner's log values: mapped, not ignored.


@pytest.mark.parametrize(
    ("written", "mode", "level", "warned"),
    [
        (
            "mode: raw",
            "production",
            "info",
            'logs.mode: RoadRunner value "raw"; rrd reads it as "production"',
        ),
        (
            "mode: RAW",
            "production",
            "info",
            'logs.mode: RoadRunner value "RAW"; rrd reads it as "production"',
        ),
        ("mode: none", "off", "error", 'logs.mode: RoadRunner value "none"; rrd reads it as "off"'),
        (
            "level: panic",
            "production",
            "error",
            'logs.level: RoadRunner value "panic"; rrd reads it as "error"',
        ),
        ("mode: off", "off", "error", None),
        ("{mode: off, level: debug}", "off", "error", None),
        ("mode: development", "development", "info", None),
    ],
)
def test_roadrunner_log_values(
    tmp_path: Path, written: str, mode: str, level: str, warned: str | None
) -> None:
    body = f"logs: {written}\n" if written.startswith("{") else f"logs:\n  {written}\n"
    config = load(tmp_path, V + body)
    assert (config.logs.mode, config.logs.level) == (mode, level)
    expected = () if warned is None else (f"{tmp_path / '.rr.yaml'}:3: {warned}",)
    assert config.warnings == expected


def test_mode_off_writes_errors_only() -> None:
    # rrd.logging reads any mode but development as JSON; off's level keeps out all but errors.
    logs = LogsConfig(mode="off", level="debug")
    assert logs.level == "error" and parse_level(logs.level) == logging.ERROR


def test_an_alias_from_an_override_or_a_variable(tmp_path: Path) -> None:
    config = load(tmp_path, V, overrides=["logs.mode=raw"])
    assert config.logs.mode == "production"
    assert config.warnings == (
        '-o: logs.mode: RoadRunner value "raw"; rrd reads it as "production"',
    )
    config = load(tmp_path, V + "logs:\n  level: ${LEVEL:-panic}\n")
    assert config.logs.level == "error" and len(config.warnings) == 1


# The mechanism, for any section.


@dataclass(frozen=True)
class Legacy:
    """A section with one ignored key and one aliased choice."""

    speed: Literal["slow", "fast"] = setting("slow", "How fast.", aliases={"turbo": "fast"})
    colour: str = setting("", "Old colour.", ignored="rrd is monochrome")


def test_the_mechanism_is_generic(tmp_path: Path) -> None:
    config = load(
        tmp_path, V + "legacy:\n  speed: turbo\n  colour: red\n", sections={"legacy": Legacy}
    )
    assert config.sections["legacy"] == Legacy("fast", "red")
    path = tmp_path / ".rr.yaml"
    assert config.warnings == (
        f'{path}:3: legacy.speed: RoadRunner value "turbo"; rrd reads it as "fast"',
        f"{path}:4: legacy.colour: {IGNORES} (rrd is monochrome)",
    )
    specs = field_specs(Legacy)
    assert specs["colour"].ignored == "rrd is monochrome" and specs["speed"].ignored is None
    assert specs["speed"].shape.aliases == (("turbo", "fast"),)


def test_an_aliased_word_is_not_offered_as_a_choice(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"expected one of: slow, fast, got string \"warp\""):
        load(tmp_path, V + "legacy:\n  speed: warp\n", sections={"legacy": Legacy})


def test_mechanism_misuse_is_a_bug_not_a_fault() -> None:
    @dataclass(frozen=True)
    class NoReason:
        x: int = setting(0, "x", ignored="")

    @dataclass(frozen=True)
    class NotAChoice:
        x: int = setting(0, "x", aliases={"one": "1"})

    @dataclass(frozen=True)
    class AliasToNothing:
        x: Literal["a", "b"] = setting("a", "x", aliases={"c": "d"})

    @dataclass(frozen=True)
    class AliasShadowsAChoice:
        x: Literal["a", "b"] = setting("a", "x", aliases={"A": "b"})

    with pytest.raises(TypeError, match="ignored= needs a reason and a default"):
        field_specs(NoReason)
    with pytest.raises(TypeError, match="aliases= needs a choice field"):
        field_specs(NotAChoice)
    for cls in (AliasToNothing, AliasShadowsAChoice):
        with pytest.raises(TypeError, match="must be a new word for one of the choices"):
            field_specs(cls)


def test_section_map_shape() -> None:
    assert shape_of(dict[str, FileLoggerOptions]) == Shape("sectionmap", cls=FileLoggerOptions)
    assert shape_of(dict[str, FileLoggerOptions] | None) == Shape(
        "sectionmap", optional=True, cls=FileLoggerOptions
    )


def test_channels_keep_their_names_as_written(tmp_path: Path) -> None:
    text = V + textwrap.dedent(
        """\
        logs:
          channels:
            HTTP: {level: info}
            jobs.consumer: {mode: raw}
        """
    )
    config = load(tmp_path, text)
    assert list(config.logs.channels) == ["HTTP", "jobs.consumer"]
    assert config.logs.channels["jobs.consumer"].mode == "raw"  # no alias below an ignored key
    assert len(config.warnings) == 1
