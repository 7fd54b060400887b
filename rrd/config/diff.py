"""What a reload must do: the running config diffed against the new one, as a plan of data.

Room: config. Imports only `rrd.errors`, the standard library and the rest of `rrd.config`;
knows no plugin by name: a plugin's section is a section, and a section holding a
`PoolConfig` (at any depth) has a pool.

`diff(old, new)` walks both configs field by field with `field_specs` and lists each setting
that differs exactly once, in schema order (version, workdir, server, logs, rpc, the plugin
sections by name, the --dotenv values), keyed as `rrd config docs` names it:

- a leaf (a number, a duration, a choice, a command) is one change at its key;
- an env map (`dict[str, str]`) is diffed per variable: `server.env.APP_ENV`;
- a section added or removed (rpc, server.on_init, a plugin's) is one change at its key; a
  plugin's section added or removed starts or stops that plugin (Action.PLUGIN);
- a key declared with `setting(ignored=...)` is one change at its key, never walked into.

`Config.source`, `lines`, `overridden` and `warnings` are not settings and never change
anything; the workdir is not one either, but a new one needs a restart. Each change gets
an `Action`, the least that applies it (see `_SERVER`, `_LOGS`, `_PLUGIN`, `_POOL`): a key
of a core section that no rule names needs a restart, the safe side.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from rrd.config.schema import (
    Config,
    LogsConfig,
    MetricsConfig,
    PoolConfig,
    RpcConfig,
    ServerConfig,
    Shape,
    StatusConfig,
    field_specs,
)
from rrd.config.tree import join, printable
from rrd.config.units import format_duration, format_size

__all__ = ["Action", "Change", "ReloadPlan", "diff", "pin"]


class Action(Enum):
    """The least a reload does for one change."""

    APPLY = "apply"  # applied in place; nothing restarts
    SCALE = "scale"  # a pool's num_workers: start or retire workers, nothing else
    REPLACE = "replace"  # how workers start changed: replace them one at a time
    PLUGIN = "plugin"  # a plugin's section added or removed: that plugin starts or stops
    RESTART = "restart"  # cannot apply while running: logged as needing a restart
    IGNORED = "ignored"  # a RoadRunner key rrd ignores: nothing to do, still listed


_SHORT: Final = 40
"""The longest value `Change.describe` writes out whole."""

_HIDDEN: Final = ("env", "section", "sectionmap", "envmap")
"""Kinds whose values `describe` never writes: an env variable may be a secret, and a
section is too big for one phrase; it says added, removed or changed instead."""


@dataclass(frozen=True, repr=False)
class Change:
    """One setting that differs: its dotted key, both values as the dataclasses hold them
    (seconds, bytes, tuples; None for absent) and what a reload does about it.

    `kind` tells `describe` how to write the values: a `Shape.kind`, `"env"` for a variable of
    an env map or of --dotenv (never written), `"path"`, or `""` for a plain `str()`.
    """

    key: str
    old: Any
    new: Any
    action: Action
    kind: str = ""

    def describe(self) -> str:
        """One short phrase: `demo.interval: 1s -> 250ms`, `server.env.DB_PASSWORD: changed`."""
        if self.kind in _HIDDEN:
            if self.old is None:
                return f"{self.key}: added"
            if self.new is None:
                return f"{self.key}: removed"
            return f"{self.key}: changed"
        return f"{self.key}: {_show(self.old, self.kind)} -> {_show(self.new, self.kind)}"

    def __repr__(self) -> str:
        # Never an env variable's value, even in a traceback or a debug log.
        old, new = (
            (_mask(self.old), _mask(self.new)) if self.kind == "env" else (self.old, self.new)
        )
        return f"Change({self.key!r}, {old!r}, {new!r}, {self.action}, kind={self.kind!r})"


def _mask(value: Any) -> str | None:
    return None if value is None else "***"


def _show(value: Any, kind: str) -> str:
    """A value as a person would write it in the config, shortened."""
    if value is None:
        text = "absent"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif kind == "duration":
        text = format_duration(value)
    elif kind == "size":
        text = format_size(value)
    elif kind == "words":
        text = shlex.join(value) if value else "[]"
    elif value == "":
        text = '""'
    else:
        text = str(value)
    text = printable(text)  # a value with a newline must not break the log line in two
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


@dataclass(frozen=True)
class ReloadPlan:
    """Every change between two configs, in schema order, and what to do about each.

    `pools` names the plugin sections that have a pool in both configs: the ones a change to
    how every worker starts (server.command, env, user, group; --dotenv) replaces.
    """

    changes: tuple[Change, ...] = ()
    pools: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the configs hold the same settings: a reload does nothing."""
        return not self.changes

    def by_action(self, action: Action) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action is action)

    def for_section(self, name: str) -> tuple[Change, ...]:
        """The changes at `name` or below it (`demo` holds `demo.pool.num_workers`, not
        `demo2.x`)."""
        return tuple(c for c in self.changes if _within(c.key, name))

    def pools_to_replace(self) -> set[str]:
        """The plugin sections whose pool workers must be replaced, one at a time: every one
        in `pools` when server.command, env, user or group or a --dotenv value changed, else
        those whose own pool's command or env changed."""
        replaced: set[str] = set()
        for change in self.by_action(Action.REPLACE):
            top = _top(change.key)
            if top in _WORKER_WIDE:
                return set(self.pools)
            replaced.add(top)
        return replaced

    def pools_to_scale(self) -> dict[str, int]:
        """Plugin section -> its pool's new num_workers (0: one per CPU)."""
        return {_top(c.key): c.new for c in self.by_action(Action.SCALE)}

    def plugins_to_stop(self) -> list[str]:
        """The plugin sections removed: those plugins stop."""
        return [c.key for c in self.by_action(Action.PLUGIN) if c.new is None]

    def plugins_to_start(self) -> list[str]:
        """The plugin sections added: those plugins start."""
        return [c.key for c in self.by_action(Action.PLUGIN) if c.old is None]

    def restart_needed(self) -> tuple[Change, ...]:
        """The changes this process cannot apply: to be logged as needing a restart."""
        return self.by_action(Action.RESTART)

    def summary(self) -> list[str]:
        """Each change described, for the `config.reloaded` log line."""
        return [c.describe() for c in self.changes]


_WORKER_WIDE: Final = frozenset({"server", "dotenv"})
"""Where a REPLACE change concerns every pool rather than one plugin's."""


def _top(key: str) -> str:
    return key.split(".", 1)[0]


def _within(key: str, name: str) -> bool:
    return key == name or key.startswith(name + ".")


# -- Classification ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """How the keys of one kind of section are classified.

    `field(name, shape)` gives the Action of a field and everything below it, or the _Rule for
    a section below; `appear` is the Action when the section itself is added or removed.
    """

    appear: Action
    field: Callable[[str, Shape], Action | _Rule]


def _constant(action: Action) -> _Rule:
    return _Rule(action, lambda name, shape: action)


def _server_field(name: str, shape: Shape) -> Action:
    # on_init runs once before any worker; relay is how workers are talked to.
    return Action.REPLACE if name in ("command", "env", "user", "group") else Action.RESTART


def _logs_field(name: str, shape: Shape) -> Action:
    # mode and output pick the writer thread's format and file, set up once.
    return Action.APPLY if name == "level" else Action.RESTART


def _pool_field(name: str, shape: Shape) -> Action:
    if name == "num_workers":
        return Action.SCALE
    if name in ("command", "env"):
        return Action.REPLACE
    return Action.APPLY  # timeouts, limits, health, restart, max_jobs, sizes, debug


def _plugin_field(name: str, shape: Shape) -> Action | _Rule:
    if shape.kind in ("section", "sectionmap"):
        return _POOL if shape.cls is PoolConfig else _PLUGIN
    return Action.APPLY  # the plugin's own settings


_SERVER: Final = _Rule(Action.RESTART, _server_field)
_LOGS: Final = _Rule(Action.RESTART, _logs_field)
_RPC: Final = _constant(Action.RESTART)
_HTTP: Final = _constant(Action.APPLY)  # status and metrics: their listeners follow at once
_POOL: Final = _Rule(Action.RESTART, _pool_field)  # an optional pool that comes or goes
_PLUGIN: Final = _Rule(Action.APPLY, _plugin_field)  # a plugin's own block below its section
_PLUGIN_SECTION: Final = _Rule(Action.PLUGIN, _plugin_field)  # the section itself


# -- The walk ----------------------------------------------------------------------------


def diff(old: Config, new: Config) -> ReloadPlan:
    """The plan that takes a running `old` config to `new`: empty when they hold the same
    settings, whatever their lines, warnings or source."""
    out: list[Change] = []
    if not _same(old.version, new.version):
        out.append(Change("version", old.version, new.version, Action.RESTART, "str"))
    if old.workdir != new.workdir:
        out.append(Change("workdir", old.workdir, new.workdir, Action.RESTART, "path"))
    _section(old.server, new.server, ServerConfig, "server", _SERVER, out)
    _section(old.logs, new.logs, LogsConfig, "logs", _LOGS, out)
    _section(old.rpc, new.rpc, RpcConfig, "rpc", _RPC, out)
    _section(old.status, new.status, StatusConfig, "status", _HTTP, out)
    _section(old.metrics, new.metrics, MetricsConfig, "metrics", _HTTP, out)
    pools = []
    for name in sorted({*old.sections, *new.sections}):  # the loader's order: by name
        before, after = old.sections.get(name), new.sections.get(name)
        if before is not None and after is not None and type(before) is not type(after):
            out.append(Change(name, before, after, Action.RESTART, "section"))
            continue
        cls = type(after if before is None else before)
        _section(before, after, cls, name, _PLUGIN_SECTION, out)
        if before is not None and after is not None and _has_pool(before) and _has_pool(after):
            pools.append(name)
    _env(old.dotenv, new.dotenv, "dotenv", Action.REPLACE, out)
    return ReloadPlan(tuple(out), tuple(pools))


def pin(new: Config, old: Config, changes: Iterable[Change]) -> Config:
    """`new`, with each of `changes` undone: set back to its value in `old`.

    A reload applies `new` pinned at the changes that need a restart, so that what cannot
    change while rrd runs (rpc.listen, what workers get as RR_RPC, logs.output...) stays as
    rrd started, for every worker it starts from now on too."""
    for change in changes:
        new = _put(new, change.key.split("."), change.old)
    return new


def _put(holder: Any, path: list[str], value: Any) -> Any:
    """`holder` with the value at `path` (a change's key, split) replaced by `value`: a
    dataclass field, a plugin section of a Config, or a mapping's key (None removes it)."""
    name, rest = path[0], path[1:]
    if isinstance(holder, Config) and name not in _CONFIG_FIELDS:
        return dataclasses.replace(holder, sections=_put(holder.sections, path, value))
    if isinstance(holder, Mapping):
        items = dict(holder)
        inner = value if not rest else _put(items[name], rest, value)
        if inner is None:
            items.pop(name, None)
        else:
            items[name] = inner
        return items
    inner = value if not rest else _put(getattr(holder, name), rest, value)
    return dataclasses.replace(holder, **{name: inner})


_CONFIG_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(Config))


def _section(old: Any, new: Any, cls: type, key: str, rule: _Rule, out: list[Change]) -> None:
    """Diff two instances of a section, either of which may be absent (None)."""
    if old is None or new is None:
        if old is not new:
            out.append(Change(key, old, new, rule.appear, "section"))
        return
    for name, spec in field_specs(cls).items():
        before, after = getattr(old, name), getattr(new, name)
        shape, sub = spec.shape, f"{key}.{name}"
        if spec.ignored is not None:
            if not _same(before, after):
                out.append(Change(sub, before, after, Action.IGNORED, shape.kind))
            continue
        what = rule.field(name, shape)
        below = what if isinstance(what, _Rule) else _constant(what)
        if shape.kind == "section" and shape.cls is not None:
            _section(before, after, shape.cls, sub, below, out)
        elif shape.kind == "sectionmap" and shape.cls is not None:
            _sectionmap(before, after, shape.cls, sub, below, out)
        elif shape.kind == "envmap":
            _env(before, after, sub, below.appear, out)
        elif not _same(before, after):
            out.append(Change(sub, before, after, below.appear, shape.kind))


def _sectionmap(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    cls: type,
    key: str,
    rule: _Rule,
    out: list[Change],
) -> None:
    if old is None or new is None:  # an optional map, absent on one side
        if old is not new:
            out.append(Change(key, old, new, rule.appear, "sectionmap"))
        return
    for name in _names(old, new):
        _section(old.get(name), new.get(name), cls, join(key, name), rule, out)


def _env(
    old: Mapping[str, str] | None,
    new: Mapping[str, str] | None,
    key: str,
    action: Action,
    out: list[Change],
) -> None:
    """Diff an env map per variable: added, removed or changed (the value never described)."""
    if old is None or new is None:  # an optional map, absent on one side
        if old is not new:
            out.append(Change(key, old, new, action, "envmap"))
        return
    for name in _names(old, new):
        before, after = old.get(name), new.get(name)
        if before != after:
            out.append(Change(join(key, name), before, after, action, "env"))


def _names(old: Iterable[str], new: Iterable[str]) -> list[str]:
    """The keys of both mappings: the new file's order, then those it no longer has."""
    names = list(new)
    seen = set(names)
    return names + [n for n in old if n not in seen]


def _same(old: Any, new: Any) -> bool:
    """Equal, where a NaN (YAML's .nan in a float field) is the same as itself."""
    if isinstance(old, float) and isinstance(new, float) and math.isnan(old):
        return math.isnan(new)
    return bool(old == new)


def _has_pool(section: Any) -> bool:
    """Whether a section holds a pool, at any depth."""
    cls: type = type(section)
    for name, spec in field_specs(cls).items():
        value = getattr(section, name)
        if spec.ignored is not None or value is None or spec.shape.cls is None:
            continue
        inner = value.values() if spec.shape.kind == "sectionmap" else (value,)
        if any(isinstance(v, PoolConfig) or _has_pool(v) for v in inner):
            return True
    return False
