"""iter_settings and render_docs: every key once, with its type, default and help."""

# setting() returns a dataclasses.field, as RUF009 cannot know.

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from rrd.config import (
    REQUIRED,
    Duration,
    LogsConfig,
    MetricsConfig,
    PoolConfig,
    RpcConfig,
    ServerConfig,
    SettingDoc,
    Size,
    StatusConfig,
    iter_settings,
    render_docs,
    setting,
)
from rrd.config.schema import field_specs


@dataclass(frozen=True)
class DemoConfig:
    """The demo plugin."""

    interval: Duration = setting(1.5, "Time between two runs.", minimum=0)
    overlap: Literal["skip", "parallel"] = setting("skip", "What to do with overlapping runs.")
    limit: Size = setting(64 * 2**20, "Largest payload.")
    ratio: float = setting(0.5, "A fraction.")
    tags: tuple[str, ...] = setting(("a", "b c"), "Some words.")
    labels: dict[str, str] = setting({"A": "1"}, "Some labels.")
    pool: PoolConfig = setting(PoolConfig(), "The demo's pool.")


@dataclass(frozen=True)
class AlphaConfig:
    name: str = setting(REQUIRED, "A required name.")


SECTIONS: dict[str, type] = {"zeta": DemoConfig, "alpha": AlphaConfig}


def leaf_keys(cls: type, prefix: str) -> list[str]:
    """Every key below `prefix`, but not below an ignored key; `*` stands for any name."""
    keys = []
    for name, spec in field_specs(cls).items():
        keys.append(f"{prefix}.{name}")
        if spec.shape.cls is not None and spec.ignored is None:
            below = f"{prefix}.{name}" + (".*" if spec.shape.kind == "sectionmap" else "")
            keys += leaf_keys(spec.shape.cls, below)
    return keys


def test_every_field_appears_once_in_order() -> None:
    docs = list(iter_settings(SECTIONS))
    keys = [d.key for d in docs]
    expected = ["version"]
    for name, cls in [
        ("server", ServerConfig),
        ("logs", LogsConfig),
        ("rpc", RpcConfig),
        ("status", StatusConfig),
        ("metrics", MetricsConfig),
        ("alpha", AlphaConfig),
        ("zeta", DemoConfig),
    ]:
        expected += [name, *leaf_keys(cls, name)]
    assert keys == expected
    assert len(set(keys)) == len(keys)


def test_every_core_field_has_help() -> None:
    for doc in iter_settings({"zeta": DemoConfig}):
        assert doc.help, doc.key


def test_types_and_defaults() -> None:
    docs = {d.key: d for d in iter_settings(SECTIONS)}
    assert docs["version"] == SettingDoc(
        "version",
        "string",
        "required",
        'The config format, quoted: "3" or "2.7" ("2.7" is read as "3").',
    )
    assert docs["zeta.interval"] == SettingDoc(
        "zeta.interval",
        "duration",
        "1.5s",
        "Time between two runs.",
    )
    rows = {k: (d.type, d.default) for k, d in docs.items()}
    assert rows["zeta.overlap"] == ("skip|parallel", "skip")
    assert rows["zeta.limit"] == ("size", "64MiB")
    assert rows["zeta.ratio"] == ("float", "0.5")
    assert rows["zeta.tags"] == ("string or list", "a 'b c'")
    assert rows["zeta.labels"] == ("map of strings", "A=1")
    assert rows["zeta.pool"] == ("section", "")
    assert rows["zeta.pool.num_workers"] == ("int", "0")
    assert rows["zeta.pool.allocate_timeout"] == ("duration", "1m")
    assert rows["zeta.pool.debug"] == ("bool", "false")
    assert rows["zeta.pool.command"] == ("string or list", "[]")
    assert rows["zeta.pool.env"] == ("map of strings", "{}")
    assert rows["zeta.pool.supervisor.watch_tick"] == ("duration", "5s")
    assert rows["zeta.pool.kill_timeout"] == ("duration", "5s")
    assert rows["zeta.pool.max_frame_size"] == ("size", "64MiB")
    assert rows["zeta.pool.max_reply_size"] == ("size", "256MiB")
    assert rows["alpha.name"] == ("string", "required")
    assert rows["server.user"] == ("string", '""')
    assert rows["server.relay"] == ("pipes", "pipes")
    assert rows["server.on_init"] == ("section", "absent")
    assert rows["server.on_init.command"] == ("string or list", "required")
    assert rows["logs.level"] == ("debug|info|warn|warning|error", "info")
    assert rows["logs.mode"] == ("production|development|off", "production")
    assert rows["logs.channels"] == ("map of sections", "{}")
    assert rows["logs.encoding"] == ("console|json", "absent")
    assert rows["server.relay_timeout"] == ("duration", "1m")
    assert rows["zeta.pool.stream_timeout"] == ("duration", "1m")
    assert rows["rpc"] == ("section", "absent")
    assert rows["rpc.listen"] == ("string", "tcp://127.0.0.1:6001")
    assert docs["zeta"].help == "The demo plugin. Absent: the plugin is off."
    assert docs["alpha"].help == "Absent: the plugin is off."


def test_render_docs_has_one_line_per_key_with_help() -> None:
    text = render_docs(SECTIONS)
    lines = text.splitlines()
    assert lines[0].split() == ["KEY", "TYPE", "DEFAULT", "DESCRIPTION"]
    starts = [line.split()[0] for line in lines[1:] if not line.startswith(" ")]
    assert starts == [d.key for d in iter_settings(SECTIONS)]
    assert all(len(line) <= 100 for line in lines)
    help_at = lines[0].index("DESCRIPTION")
    flat = " ".join(" ".join(line[help_at:] for line in lines).split())
    for doc in iter_settings(SECTIONS):
        assert " ".join(doc.help.split()) in flat


def columns(lines: list[str]) -> list[int]:
    header = lines[0]
    return [header.index(name) for name in ("TYPE", "DEFAULT", "DESCRIPTION")]


def test_render_docs_wraps_every_cell_in_its_column() -> None:
    lines = render_docs(SECTIONS).splitlines()
    type_at, default_at, help_at = columns(lines)
    for line in lines[1:]:
        if line.startswith(" "):
            assert line[:type_at].strip() == ""
        # No cell runs into the next column, but for a default too long to break.
        too_long = ("rpc.listen ", "metrics.address ")
        for at in (type_at, help_at if not line.startswith(too_long) else None):
            if at is not None and len(line) > at:
                assert line[at - 2 : at] == "  ", line
    row = lines.index(next(line for line in lines if line.startswith("logs.level ")))
    assert [line[type_at:default_at].strip() for line in lines[row : row + 3]] == [
        "debug|info|",
        "warn|warning|",
        "error",
    ]
    assert lines[row][default_at:help_at].strip() == "info"
    assert lines[row][help_at:].startswith("The least severe level written")


def test_render_docs_pushes_the_help_below_a_default_too_long_to_break() -> None:
    lines = render_docs().splitlines()
    _, _, help_at = columns(lines)
    row = lines.index(next(line for line in lines if line.startswith("rpc.listen ")))
    assert lines[row].split() == ["rpc.listen", "string", "tcp://127.0.0.1:6001"]
    assert lines[row + 1][help_at:].startswith("Address:")
    assert lines[row + 1][:help_at].strip() == ""


def test_render_docs_aligns_the_help_column() -> None:
    lines = render_docs().splitlines()
    column = lines[0].index("DESCRIPTION")
    for line in lines[1:]:
        if line.startswith(" ") and len(line) > column:
            assert line[column - 2 : column] == "  " and line[column] != " ", line
    row = next(line for line in lines if line.startswith("logs.output "))
    assert row[column:].startswith("Where the log goes:")


def test_ignored_keys_are_marked_and_not_walked() -> None:
    docs = {d.key: d for d in iter_settings(SECTIONS)}
    relay = docs["server.relay_timeout"].help
    assert relay.startswith("(ignored; RoadRunner compatibility) ")
    assert relay.endswith("Ignored: pipes need no connect timeout.")
    assert "Keys: log_output, max_size" in docs["logs.file_logger_options"].help
    assert "Each name's keys: mode, level" in docs["logs.channels"].help
    assert not [k for k in docs if k.startswith(("logs.channels.", "logs.file_logger_options."))]
    assert "ignored" not in docs["logs.output"].help
    assert docs["logs.mode"].help.endswith(
        "RoadRunner's values read: raw as production, none as off."
    )
    assert docs["logs.level"].help.endswith("RoadRunner's values read: panic as error.")


@dataclass(frozen=True)
class Route:
    path: str = setting("/", "The path.")


@dataclass(frozen=True)
class Routes:
    routes: dict[str, Route] = setting({}, "Routes by name.")


def test_a_section_map_is_walked_with_a_star() -> None:
    keys = [d.key for d in iter_settings({"web": Routes})]
    assert keys[-3:] == ["web", "web.routes", "web.routes.*.path"]


def test_setting_copies_mutable_defaults() -> None:
    one, two = DemoConfig(), DemoConfig()
    assert one.labels == two.labels and one.labels is not two.labels
    metadata = dataclasses.fields(DemoConfig)[0].metadata
    assert metadata["help"] == "Time between two runs." and metadata["minimum"] == 0


def test_pool_docs_say_what_zero_and_the_limits_mean() -> None:
    docs = {d.key: d.help for d in iter_settings(SECTIONS)}
    for key in ("allocate_timeout", "destroy_timeout", "reset_timeout"):
        assert docs[f"zeta.pool.{key}"].endswith(" 0 means 60s, as in RoadRunner."), key
    assert docs["zeta.pool.destroy_timeout"].startswith(
        "Grace period for a worker to exit after its stop frame before it gets SIGTERM; also "
        "how long a pool's stop waits for jobs in flight."
    )
    assert "SIGKILL" in docs["zeta.pool.kill_timeout"]
    assert "killed and replaced" in docs["zeta.pool.max_frame_size"]
    assert "max_frame_size" in docs["zeta.pool.max_reply_size"]
    assert "0 means" not in docs["zeta.pool.kill_timeout"]
