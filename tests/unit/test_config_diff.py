"""diff(old, new): what a reload does, change by change, as a ReloadPlan."""

# setting() returns a dataclasses.field, as RUF009 cannot know.

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rrd.config import (
    Action,
    Change,
    Config,
    PoolConfig,
    ReloadPlan,
    diff,
    load_config,
    pin,
    setting,
)
from rrd.plugins.ticker import TickerConfig


@dataclass(frozen=True)
class DemoConfig:
    """An invented plugin section with a pool, beside the ticker's."""

    name: str = setting("", "A name.")
    pool: PoolConfig = setting(PoolConfig(), "The demo's pool.")


SECTIONS: dict[str, type] = {"ticker": TickerConfig, "demo": DemoConfig}

BASE = """\
version: "3"
server:
  command: "php worker.php"
  env: {APP_ENV: prod, DB_PASSWORD: hunter2}
logs: {level: info}
rpc: {listen: "tcp://127.0.0.1:6001"}
ticker:
  interval: 1s
  pool: {num_workers: 2}
demo:
  name: d
  pool: {num_workers: 1}
"""


def load(tmp_path: Path, text: str, name: str = ".rr.yaml", **kwargs: Any) -> Config:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    kwargs.setdefault("environ", {})
    kwargs.setdefault("sections", SECTIONS)
    return load_config(path, **kwargs)


def plan_of(tmp_path: Path, old: str, new: str, **kwargs: Any) -> ReloadPlan:
    return diff(
        load(tmp_path, old, "old.yaml", **kwargs), load(tmp_path, new, "new.yaml", **kwargs)
    )


def edit(text: str, *pairs: tuple[str, str]) -> str:
    for before, after in pairs:
        assert before in text, before
        text = text.replace(before, after, 1)
    return text


def actions(plan: ReloadPlan) -> dict[str, Action]:
    return {c.key: c.action for c in plan.changes}


# -- Nothing changed ---------------------------------------------------------------------------


def test_an_unchanged_file_is_an_empty_plan(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, BASE, BASE)
    assert plan.empty and plan.changes == () and plan.summary() == []
    assert plan.pools_to_replace() == set() and plan.pools_to_scale() == {}
    assert plan.restart_needed() == ()


def test_lines_warnings_and_source_are_not_settings(tmp_path: Path) -> None:
    # The same settings written differently: other lines, a 2.7 warning aside, another name.
    moved = "# a comment\n\n" + BASE.replace("logs: {level: info}\n", "logs:\n  level: info\n")
    old, new = load(tmp_path, BASE, "a.yaml"), load(tmp_path, moved, "b.yaml")
    assert old.lines != new.lines and old.source != new.source
    assert diff(old, new).empty
    warned = replace(new, warnings=("something",))
    assert diff(old, warned).empty


def test_defaults_written_out_are_no_change(tmp_path: Path) -> None:
    explicit = edit(BASE, ("  pool: {num_workers: 2}", "  pool: {num_workers: 2, max_jobs: 0}"))
    explicit = edit(explicit, ("logs: {level: info}", "logs: {level: info, mode: production}"))
    assert plan_of(tmp_path, BASE, explicit).empty


# -- Each action with its keys -----------------------------------------------------------------


def test_interval_is_applied_in_place(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, BASE, edit(BASE, ("interval: 1s", "interval: 250ms")))
    (change,) = plan.changes
    assert change == Change("ticker.interval", 1.0, 0.25, Action.APPLY, "duration")
    assert change.describe() == "ticker.interval: 1s -> 250ms"
    assert plan.summary() == ["ticker.interval: 1s -> 250ms"]
    assert plan.pools_to_replace() == set() and plan.pools_to_scale() == {}


APPLIED = [
    ("logs: {level: info}", "logs: {level: debug}", "logs.level", "info -> debug"),
    ("  interval: 1s\n", "  interval: 1s\n  overlap: parallel\n", "ticker.overlap", None),
    ("  interval: 1s\n", "  interval: 1s\n  exec_timeout: 5s\n", "ticker.exec_timeout", None),
    ("  name: d\n", "  name: e\n", "demo.name", "d -> e"),
    ("{num_workers: 2}", "{num_workers: 2, max_jobs: 10}", "ticker.pool.max_jobs", "0 -> 10"),
    (
        "{num_workers: 2}",
        "{num_workers: 2, allocate_timeout: 1m30s}",
        "ticker.pool.allocate_timeout",
        "1m -> 1m30s",
    ),
    (
        "{num_workers: 2}",
        "{num_workers: 2, max_frame_size: 1MiB}",
        "ticker.pool.max_frame_size",
        "64MiB -> 1MiB",
    ),
    ("{num_workers: 2}", "{num_workers: 2, debug: true}", "ticker.pool.debug", "false -> true"),
    (
        "{num_workers: 2}",
        "{num_workers: 2, supervisor: {ttl: 1h}}",
        "ticker.pool.supervisor.ttl",
        "0s -> 1h",
    ),
    (
        "{num_workers: 2}",
        "{num_workers: 2, health: {interval: 0s}}",
        "ticker.pool.health.interval",
        "10s -> 0s",
    ),
    (
        "{num_workers: 1}",
        "{num_workers: 1, restart: {max_retries: 3}}",
        "demo.pool.restart.max_retries",
        "10 -> 3",
    ),
]


@pytest.mark.parametrize(("before", "after", "key", "shown"), APPLIED, ids=[a[2] for a in APPLIED])
def test_applied_in_place(
    tmp_path: Path, before: str, after: str, key: str, shown: str | None
) -> None:
    plan = plan_of(tmp_path, BASE, edit(BASE, (before, after)))
    assert actions(plan) == {key: Action.APPLY}
    if shown is not None:
        assert plan.changes[0].describe() == f"{key}: {shown}"
    assert plan.pools_to_replace() == set() and plan.pools_to_scale() == {}
    assert plan.restart_needed() == ()


def test_num_workers_alone_scales_and_replaces_nothing(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, BASE, edit(BASE, ("{num_workers: 2}", "{num_workers: 5}")))
    assert plan.changes == (Change("ticker.pool.num_workers", 2, 5, Action.SCALE, "int"),)
    assert plan.pools_to_scale() == {"ticker": 5}
    assert plan.pools_to_replace() == set()
    assert plan.summary() == ["ticker.pool.num_workers: 2 -> 5"]


REPLACED = [
    ('command: "php worker.php"', 'command: "php other.php"', "server.command"),
    ("  env: {APP_ENV", "  user: www\n  env: {APP_ENV", "server.user"),
    ("  env: {APP_ENV", "  group: www\n  env: {APP_ENV", "server.group"),
    ("APP_ENV: prod", "APP_ENV: staging", "server.env.APP_ENV"),
]


@pytest.mark.parametrize(("before", "after", "key"), REPLACED, ids=[r[2] for r in REPLACED])
def test_how_every_worker_starts_replaces_every_pool(
    tmp_path: Path, before: str, after: str, key: str
) -> None:
    plan = plan_of(tmp_path, BASE, edit(BASE, (before, after)))
    assert actions(plan) == {key: Action.REPLACE}
    assert plan.pools == ("demo", "ticker")
    assert plan.pools_to_replace() == {"demo", "ticker"}
    assert plan.pools_to_scale() == {}


def test_server_command_is_described_as_written(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, BASE, edit(BASE, ('"php worker.php"', "[php, 'my worker.php']")))
    (change,) = plan.changes
    assert change.old == ("php", "worker.php") and change.new == ("php", "my worker.php")
    assert change.describe() == "server.command: php worker.php -> php 'my worker.php'"


def test_a_pools_own_command_replaces_that_pool_only(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path, BASE, edit(BASE, ("{num_workers: 1}", "{num_workers: 1, command: php d.php}"))
    )
    assert actions(plan) == {"demo.pool.command": Action.REPLACE}
    assert plan.pools_to_replace() == {"demo"}
    assert plan.changes[0].describe() == "demo.pool.command: [] -> php d.php"


def test_a_pools_env_replaces_that_pool_only(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path, BASE, edit(BASE, ("{num_workers: 2}", "{num_workers: 2, env: {TOKEN: s3cr3t}}"))
    )
    assert actions(plan) == {"ticker.pool.env.TOKEN": Action.REPLACE}
    assert plan.pools_to_replace() == {"ticker"}
    assert plan.summary() == ["ticker.pool.env.TOKEN: added"]


def test_scale_and_replace_together(tmp_path: Path) -> None:
    new = edit(BASE, ("{num_workers: 1}", "{num_workers: 4, command: php d.php}"))
    plan = plan_of(tmp_path, BASE, new)
    assert plan.pools_to_scale() == {"demo": 4}
    assert plan.pools_to_replace() == {"demo"}


def test_dotenv_values_replace_every_pool(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text("APP_KEY=k3y-old\nGONE=x\n", encoding="utf-8")
    (tmp_path / "b.env").write_text("APP_KEY=k3y-new\nNEW=y\n", encoding="utf-8")
    old = load(tmp_path, BASE, "old.yaml", workdir=tmp_path, dotenv="a.env")
    new = load(tmp_path, BASE, "new.yaml", workdir=tmp_path, dotenv="b.env")
    plan = diff(old, new)
    assert actions(plan) == {
        "dotenv.APP_KEY": Action.REPLACE,
        "dotenv.NEW": Action.REPLACE,
        "dotenv.GONE": Action.REPLACE,
    }
    assert plan.summary() == [
        "dotenv.APP_KEY: changed",
        "dotenv.NEW: added",
        "dotenv.GONE: removed",
    ]
    assert plan.pools_to_replace() == {"demo", "ticker"}
    assert "k3y" not in repr(plan)


def test_dotenv_expanded_into_a_setting_is_that_setting_too(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text("TICK=1s\n", encoding="utf-8")
    (tmp_path / "b.env").write_text("TICK=2s\n", encoding="utf-8")
    text = edit(BASE, ("interval: 1s", "interval: ${TICK}"))
    old = load(tmp_path, text, "old.yaml", workdir=tmp_path, dotenv="a.env")
    new = load(tmp_path, text, "new.yaml", workdir=tmp_path, dotenv="b.env")
    assert actions(diff(old, new)) == {
        "ticker.interval": Action.APPLY,
        "dotenv.TICK": Action.REPLACE,
    }


RESTARTS = [
    (
        'rpc: {listen: "tcp://127.0.0.1:6001"}',
        'rpc: {listen: "tcp://127.0.0.1:7001"}',
        "rpc.listen",
    ),
    ("logs: {level: info}", "logs: {level: info, mode: development}", "logs.mode"),
    ("logs: {level: info}", "logs: {level: info, output: /tmp/rrd.log}", "logs.output"),
    ("  env: {APP_ENV", "  on_init: {command: make}\n  env: {APP_ENV", "server.on_init"),
    ('version: "3"', 'version: "2.7"', "version"),
]


@pytest.mark.parametrize(("before", "after", "key"), RESTARTS, ids=[r[2] for r in RESTARTS])
def test_what_needs_a_restart(tmp_path: Path, before: str, after: str, key: str) -> None:
    plan = plan_of(tmp_path, BASE, edit(BASE, (before, after)))
    assert actions(plan) == {key: Action.RESTART}
    assert plan.restart_needed() == plan.changes
    assert plan.pools_to_replace() == set() and plan.pools_to_scale() == {}


def test_a_plugin_section_removed_or_added_stops_or_starts_that_plugin(tmp_path: Path) -> None:
    section = "demo:\n  name: d\n  pool: {num_workers: 1}\n"
    without = edit(BASE, (section, ""))
    removed = plan_of(tmp_path, BASE, without)
    assert actions(removed) == {"demo": Action.PLUGIN}
    assert removed.plugins_to_stop() == ["demo"] and removed.plugins_to_start() == []
    assert removed.restart_needed() == () and removed.pools_to_replace() == set()
    added = plan_of(tmp_path, without, BASE)
    assert added.plugins_to_start() == ["demo"] and added.plugins_to_stop() == []


def test_pin_keeps_what_needs_a_restart_as_rrd_started(tmp_path: Path) -> None:
    """A reload applies the new file pinned at its restart-needed keys: workers started
    after it still get the rpc address rrd listens on, and the pinned config diffs to the
    applied changes only."""
    moved = edit(
        BASE, ("tcp://127.0.0.1:6001", "tcp://127.0.0.1:7001"), ("interval: 1s", "interval: 2s")
    )
    old, new = load(tmp_path, BASE), load(tmp_path, moved)
    pinned = diff(old, new).restart_needed()
    assert [c.key for c in pinned] == ["rpc.listen"]
    in_force = pin(new, old, pinned)
    assert in_force.rpc == old.rpc and in_force.sections == new.sections
    assert diff(old, in_force).restart_needed() == ()
    back = diff(in_force, load(tmp_path, BASE))
    assert back.restart_needed() == ()  # the file going back needs no restart any more


def test_rpc_appearing_is_one_restart(tmp_path: Path) -> None:
    without = edit(BASE, ('rpc: {listen: "tcp://127.0.0.1:6001"}\n', ""))
    plan = plan_of(tmp_path, without, BASE)
    (change,) = plan.restart_needed()
    assert change.key == "rpc" and change.old is None and change.new.listen.endswith(":6001")
    assert change.describe() == "rpc: added"
    assert plan_of(tmp_path, BASE, without).summary() == ["rpc: removed"]


def test_a_plugin_section_added_is_one_change(tmp_path: Path) -> None:
    without = edit(BASE, ("ticker:\n  interval: 1s\n  pool: {num_workers: 2}\n", ""))
    plan = plan_of(tmp_path, without, BASE)
    assert plan.changes == (Change("ticker", None, plan.changes[0].new, Action.PLUGIN, "section"),)
    assert isinstance(plan.changes[0].new, TickerConfig)
    assert plan.summary() == ["ticker: added"]
    assert plan.pools == ("demo",)  # the ticker's pool is not running: nothing to replace
    server = edit(BASE, ('"php worker.php"', '"php w2.php"'))
    assert plan_of(tmp_path, without, server).pools_to_replace() == {"demo"}


def test_on_init_keys_need_a_restart(tmp_path: Path) -> None:
    old = edit(BASE, ("  env: {APP_ENV", "  on_init: {command: make}\n  env: {APP_ENV"))
    new = edit(
        BASE,
        ("  env: {APP_ENV", "  on_init: {command: make all, env: {K: v}}\n  env: {APP_ENV"),
    )
    plan = plan_of(tmp_path, old, new)
    assert actions(plan) == {
        "server.on_init.command": Action.RESTART,
        "server.on_init.env.K": Action.RESTART,
    }
    assert plan.summary() == [
        "server.on_init.command: make -> make all",
        "server.on_init.env.K: added",
    ]


def test_the_workdir_needs_a_restart(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    old = load(tmp_path / "a", BASE, workdir=tmp_path / "a")
    new = load(tmp_path / "b", BASE, workdir=tmp_path / "b")
    assert actions(diff(old, new)) == {"workdir": Action.RESTART}


IGNORED = [
    ("  env: {APP_ENV", "  relay_timeout: 5s\n  env: {APP_ENV", "server.relay_timeout"),
    ("logs: {level: info}", "logs: {level: info, encoding: json}", "logs.encoding"),
    (
        "logs: {level: info}",
        "logs: {level: info, channels: {http: {level: debug}}}",
        "logs.channels",
    ),
    ("{num_workers: 2}", "{num_workers: 2, stream_timeout: 5s}", "ticker.pool.stream_timeout"),
]


@pytest.mark.parametrize(("before", "after", "key"), IGNORED, ids=[i[2] for i in IGNORED])
def test_ignored_keys_are_listed_and_do_nothing(
    tmp_path: Path, before: str, after: str, key: str
) -> None:
    plan = plan_of(tmp_path, BASE, edit(BASE, (before, after)))
    assert actions(plan) == {key: Action.IGNORED}
    assert plan.by_action(Action.IGNORED) == plan.changes
    assert plan.pools_to_replace() == set() and plan.restart_needed() == ()


def test_an_ignored_key_of_an_ignored_section_is_not_walked_into(tmp_path: Path) -> None:
    old = edit(BASE, ("logs: {level: info}", "logs: {channels: {http: {level: info}}}"))
    new = edit(BASE, ("logs: {level: info}", "logs: {channels: {http: {level: debug}}}"))
    plan = plan_of(tmp_path, old, new)
    assert actions(plan) == {"logs.channels": Action.IGNORED}
    assert plan.summary() == ["logs.channels: changed"]


# -- Env maps ------------------------------------------------------------------------------


def test_env_maps_diff_per_variable_and_never_show_values(tmp_path: Path) -> None:
    new = edit(BASE, ("{APP_ENV: prod, DB_PASSWORD: hunter2}", "{DB_PASSWORD: swordfish, X: 1}"))
    plan = plan_of(tmp_path, BASE, new)
    assert plan.changes == (
        Change("server.env.DB_PASSWORD", "hunter2", "swordfish", Action.REPLACE, "env"),
        Change("server.env.X", None, "1", Action.REPLACE, "env"),
        Change("server.env.APP_ENV", "prod", None, Action.REPLACE, "env"),
    )
    assert plan.summary() == [
        "server.env.DB_PASSWORD: changed",
        "server.env.X: added",
        "server.env.APP_ENV: removed",
    ]
    shown = repr(plan) + str(plan) + " ".join(plan.summary())
    assert "hunter2" not in shown and "swordfish" not in shown


def test_env_keys_are_compared_as_the_loader_upper_cases_them(tmp_path: Path) -> None:
    assert plan_of(tmp_path, BASE, edit(BASE, ("APP_ENV: prod", "app_env: prod"))).empty


# -- The plan's views ------------------------------------------------------------------------


def test_for_section_and_by_action(tmp_path: Path) -> None:
    new = edit(
        BASE,
        ("interval: 1s", "interval: 2s"),
        ("{num_workers: 2}", "{num_workers: 3}"),
        ("logs: {level: info}", "logs: {level: warn}"),
        ("name: d", "name: e"),
    )
    plan = plan_of(tmp_path, BASE, new)
    # Schema order: core sections first, then the plugins by name.
    assert [c.key for c in plan.changes] == [
        "logs.level",
        "demo.name",
        "ticker.interval",
        "ticker.pool.num_workers",
    ]
    assert [c.key for c in plan.for_section("ticker")] == [
        "ticker.interval",
        "ticker.pool.num_workers",
    ]
    assert [c.key for c in plan.for_section("ticker.pool")] == ["ticker.pool.num_workers"]
    assert [c.key for c in plan.for_section("logs")] == ["logs.level"]
    assert plan.for_section("server") == () and plan.for_section("tick") == ()
    assert [c.key for c in plan.by_action(Action.APPLY)] == [
        "logs.level",
        "demo.name",
        "ticker.interval",
    ]


def test_a_hand_made_plan() -> None:
    plan = ReloadPlan(
        (
            Change("server.command", ("a",), ("b",), Action.REPLACE, "words"),
            Change("demo.pool.num_workers", 1, 3, Action.SCALE),
        ),
        pools=("demo", "other"),
    )
    assert not plan.empty
    assert plan.pools_to_replace() == {"demo", "other"}
    assert plan.pools_to_scale() == {"demo": 3}
    assert plan.summary() == ["server.command: a -> b", "demo.pool.num_workers: 1 -> 3"]


@pytest.mark.parametrize(
    ("change", "described"),
    [
        (Change("a.t", 0.0015, 90.0, Action.APPLY, "duration"), "a.t: 1.5ms -> 1m30s"),
        (Change("a.s", 1000, 2**20, Action.APPLY, "size"), "a.s: 1KB -> 1MiB"),
        (Change("a.o", None, "x", Action.IGNORED, "str"), "a.o: absent -> x"),
        (Change("a.u", "", "www", Action.REPLACE, "str"), 'a.u: "" -> www'),
        (Change("a.b", True, False, Action.APPLY, "bool"), "a.b: true -> false"),
        (
            Change("a.c", ("php", "x" * 80), (), Action.REPLACE, "words"),
            "a.c: php " + "x" * 33 + "... -> []",
        ),
        (Change("a.e", "x" * 80, None, Action.REPLACE, "env"), "a.e: removed"),
    ],
)
def test_describe(change: Change, described: str) -> None:
    assert change.describe() == described


# -- Properties ------------------------------------------------------------------------------

# Each key with values that differ from its default and from each other once loaded.
CHOICES: dict[str, list[Any]] = {
    "server.command": ["php a.php", "php b.php"],
    "server.user": ["www"],
    "server.env.A": ["1", "2"],
    "server.env.B": ["x"],
    "server.relay_timeout": ["5s", "10s"],
    "server.on_init.command": ["make", "make all"],
    "logs.level": ["debug", "error"],
    "logs.output": ["stdout"],
    "logs.encoding": ["json"],
    "rpc.listen": ["tcp://127.0.0.1:6001", "tcp://127.0.0.1:7001"],
    "ticker.interval": ["250ms", "2s"],
    "ticker.overlap": ["parallel"],
    "ticker.pool.num_workers": [1, 3],
    "ticker.pool.supervisor.ttl": ["1h", "30m"],
    "ticker.pool.env.X": ["a", "b"],
    "demo.name": ["x", "y"],
    "demo.pool.command": ["php d.php", "php e.php"],
    "demo.pool.stream_timeout": ["1s"],
}
OPTIONAL_SECTIONS = ("server.on_init", "rpc", "ticker", "demo")

Choice = dict[str, Any]


def choices() -> st.SearchStrategy[Choice]:
    return st.fixed_dictionaries(
        {},
        optional={key: st.sampled_from(values) for key, values in CHOICES.items()},
    )


def render(choice: Choice, version: str = "3") -> str:
    tree: dict[str, Any] = {"version": version}
    for key, value in choice.items():
        *path, leaf = key.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return yaml.safe_dump(tree, sort_keys=False)


def value_at(config: Config, key: str) -> Any:
    """The value a dotted key names in a loaded config; None when absent."""
    top, *rest = key.split(".")
    node: Any
    if top in ("version", "workdir", "server", "logs", "rpc"):
        node = getattr(config, top)
    elif top == "dotenv":
        node = config.dotenv
    else:
        node = config.sections.get(top)
    for part in rest:
        if node is None:
            return None
        node = node.get(part) if isinstance(node, Mapping) else getattr(node, part)
    return node


def expected_keys(old: Choice, new: Choice) -> set[str]:
    """The keys a diff lists: per key chosen, unless a section holding it came or went."""
    came_or_went = {
        s
        for s in OPTIONAL_SECTIONS
        if any(k.startswith(s + ".") for k in old) != any(k.startswith(s + ".") for k in new)
    }
    keys = {
        k
        for k in {*old, *new}
        if old.get(k) != new.get(k) and not any(k.startswith(s + ".") for s in came_or_went)
    }
    return keys | came_or_went


@given(choices())
@settings(max_examples=60, deadline=None)
def test_a_config_diffed_with_itself_is_empty(
    tmp_path_factory: pytest.TempPathFactory, choice: Choice
) -> None:
    tmp = tmp_path_factory.mktemp("same")
    config = load(tmp, render(choice), "a.yaml")
    again = load(tmp, render(choice), "b.yaml")
    assert diff(config, config).empty
    assert diff(config, again).empty


@given(choices(), choices(), st.sampled_from(["3", "2.7"]))
@settings(max_examples=150, deadline=None)
def test_every_difference_is_listed_once_with_both_values(
    tmp_path_factory: pytest.TempPathFactory, old_choice: Choice, new_choice: Choice, version: str
) -> None:
    tmp = tmp_path_factory.mktemp("two")
    old = load(tmp, render(old_choice), "old.yaml")
    new = load(tmp, render(new_choice, version), "new.yaml")
    plan = diff(old, new)
    keys = [c.key for c in plan.changes]
    assert len(keys) == len(set(keys))
    assert set(keys) == expected_keys(old_choice, new_choice) | (
        {"version"} if version != "3" else set()
    )
    for change in plan.changes:
        # The new value wins: each change carries exactly what the two configs hold.
        assert change.old == value_at(old, change.key)
        assert change.new == value_at(new, change.key)
        assert change.describe().startswith(change.key + ": ")
    assert plan == diff(old, new)  # deterministic
    back = {c.key: (c.new, c.old, c.action) for c in diff(new, old).changes}
    assert back == {c.key: (c.old, c.new, c.action) for c in plan.changes}
