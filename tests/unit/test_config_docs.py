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
    PoolConfig,
    RpcConfig,
    ServerConfig,
    SettingDoc,
    Size,
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
    keys = []
    for name, spec in field_specs(cls).items():
        keys.append(f"{prefix}.{name}")
        if spec.shape.cls is not None:
            keys += leaf_keys(spec.shape.cls, f"{prefix}.{name}")
    return keys


def test_every_field_appears_once_in_order() -> None:
    docs = list(iter_settings(SECTIONS))
    keys = [d.key for d in docs]
    expected = ["version"]
    for name, cls in [
        ("server", ServerConfig),
        ("logs", LogsConfig),
        ("rpc", RpcConfig),
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
    assert rows["zeta.overlap"] == ("one of: skip, parallel", "skip")
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
    assert rows["alpha.name"] == ("string", "required")
    assert rows["server.user"] == ("string", '""')
    assert rows["server.relay"] == ("one of: pipes", "pipes")
    assert rows["server.on_init"] == ("section", "absent")
    assert rows["server.on_init.command"] == ("string or list", "required")
    assert rows["logs.level"] == ("one of: debug, info, warn, warning, error", "info")
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
    overflowing = ("logs.", "zeta.overlap", "rpc.listen")  # long types and defaults
    assert all(len(line) <= 100 for line in lines if not line.startswith(overflowing))
    flat = " ".join(text.split())
    for doc in iter_settings(SECTIONS):
        assert " ".join(doc.help.split()) in flat


def test_render_docs_aligns_the_help_column() -> None:
    lines = render_docs().splitlines()
    column = lines[0].index("DESCRIPTION")
    for line in lines[1:]:
        if line.startswith(" "):
            assert line[:column].strip() == "" and line[column] != " "
    row = next(line for line in lines if line.startswith("logs.output "))
    assert row[column:].startswith("Where the log goes:")


def test_setting_copies_mutable_defaults() -> None:
    one, two = DemoConfig(), DemoConfig()
    assert one.labels == two.labels and one.labels is not two.labels
    metadata = dataclasses.fields(DemoConfig)[0].metadata
    assert metadata["help"] == "Time between two runs." and metadata["minimum"] == 0
