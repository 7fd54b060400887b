"""The raw tree to section dataclasses: one small converter driven by the fields' shapes.

Room: config. Imports only `rrd.errors`, the standard library and the rest of `rrd.config`.

Weak typing, decided here: a YAML string is turned into an integer, number or boolean only
when it held a `$` reference (so `num_workers: ${WORKERS:-4}` works) or came from `-o`. A
literal `num_workers: "4"` is an error, as is `true` for an integer: quotes in a config are
meant, and silently reading them the other way hides mistakes. An integer is accepted for a
string field (`user: 1000`); a number or boolean is not (`2.10` would be read as 2.1). Env
values and command words take any scalar as written: `VERSION: 1.10` is "1.10", `A: yes` "yes".
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from rrd.config.schema import FieldSpec, Shape, field_specs
from rrd.config.tree import FILE, OVERRIDE, Entry, Node, describe, join, quote
from rrd.config.units import format_duration, format_size, parse_duration, parse_size
from rrd.errors import ConfigError

__all__ = ["Converter", "expand_env", "suggest"]

_REFERENCE = re.compile(
    r"\$(?:(?P<dollar>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<bad>\{[^}]*\}?))"
)
_INTEGER = re.compile(r"[-+]?[0-9]+")
_MAX_DIGITS = 1000  # int() refuses more than 4300 digits
_MAX_COMMAND = 128 * 1024
"""Longest command string split into words: shlex takes time quadratic in the length (a
minute for 2 MB), and Linux runs no argument longer than this anyway (MAX_ARG_STRLEN)."""
_FLOAT_LIMIT = 2**1023  # float() of a larger int raises OverflowError
_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def expand_env(text: str, environ: Mapping[str, str]) -> str:
    """Expand `$VAR`, `${VAR}` and `${VAR:-default}` in one pass; `$$` is a literal `$`."""

    def replace(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        if match["bad"] is not None:
            raise ConfigError(
                f"bad reference {quote(match[0])}: write $NAME, ${{NAME}} or ${{NAME:-default}}"
            )
        name = match["braced"] or match["bare"]
        value = environ.get(name, "")
        default = match["default"]
        if default is None:
            return value
        if "$" in default:
            raise ConfigError(
                f"bad reference {quote(match[0])}: a default is plain text, without $"
            )
        return value or default

    return _REFERENCE.sub(replace, text)


def suggest(word: str, known: list[str]) -> str:
    """`; did you mean 'x'?` for the closest known word, else the list of known words."""
    close = closest(word, known)
    if close is not None:
        return f"; did you mean '{close}'?"
    return f"; expected one of: {', '.join(sorted(known))}" if known else ""


def closest(word: str, known: list[str]) -> str | None:
    """The known word closest to `word` (case aside), if any is close."""
    import difflib  # only when a word is wrong: 0.2 MiB of the daemon otherwise

    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


_EXPECTED = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "duration": 'a duration, as "5s"',
    "size": 'a size, as "64MiB"',
    "words": "a command (a string or a list of strings)",
    "envmap": "a mapping of names to strings",
    "section": "a mapping",
    "sectionmap": "a mapping of names to mappings",
}


class Converter:
    """Turns raw Nodes into values of section dataclasses; every error names file, line, key.

    Warnings (a RoadRunner key or value rrd reads its own way) collect in `warnings`, each
    worded and placed like an error. Every key converted is noted in `lines` (its line in the
    file) or `overridden` (set by `-o`), for `Config.error`.
    """

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.warnings: list[str] = []
        self.lines: dict[str, int] = {}
        self.overridden: set[str] = set()

    def note(self, key: str, line: int | None, node: Node) -> None:
        """Remember where `key` was written: a line of the file, or an `-o`."""
        if node.origin == OVERRIDE:
            self.overridden.add(key)
        elif line is not None and node.origin == FILE:
            self.lines[key] = line

    def error(self, node: Node, key: str, line: int | None, message: str) -> ConfigError:
        """A ConfigError about `node` at `key`, on `line` of the file or on `-o`."""
        if node.origin == OVERRIDE:
            return ConfigError(message, path="-o", key=key or None)
        return ConfigError(message, path=self.source, line=line, key=key or None)

    def fail(self, node: Node, key: str, line: int | None, message: str) -> NoReturn:
        """Raise `error(...)`."""
        raise self.error(node, key, line, message)

    def warn(self, node: Node, key: str, line: int | None, message: str) -> None:
        """Add `FILE:LINE: KEY: message` (or `-o: KEY: message`) to the warnings."""
        self.warnings.append(str(self.error(node, key, line, message)))

    def section(self, cls: type, node: Node, key: str, line: int | None) -> Any:
        """A section dataclass from a mapping node (null means all defaults)."""
        specs = field_specs(cls)
        if node.value is None:
            entries: dict[str, Entry] = {}
        elif isinstance(node.value, dict):
            entries = node.value
        else:
            self.fail(node, key, line, f"expected a mapping, got {describe(node.value)}")
        values: dict[str, Any] = {}
        for name, entry in entries.items():
            spec = specs.get(name)
            sub = join(key, name)
            at = entry.key_line if entry.key_line is not None else entry.node.line
            self.note(sub, entry.key_line, entry.node)
            if spec is None:
                self.fail(entry.node, sub, at, "unknown key" + suggest(name, list(specs)))
            values[name] = self.field(spec, entry.node, sub, at)
            if spec.ignored is not None:
                message = f"RoadRunner setting; rrd accepts it and ignores it ({spec.ignored})"
                self.warn(entry.node, sub, at, message)
        for name, spec in specs.items():
            if spec.required and name not in values:
                self.fail(node, join(key, name), line, "missing; this key is required")
        try:
            return cls(**values)
        except ValueError as err:
            self.fail(node, key, line, str(err))
        except ConfigError as err:
            # A check across fields names the field to blame, relative to the section.
            blamed = entries.get(err.key) if err.key else None
            if err.key is None:
                self.fail(node, key, line, err.message)
            if blamed is None:
                self.fail(node, join(key, err.key), line, err.message)
            at = blamed.key_line if blamed.key_line is not None else blamed.node.line
            self.fail(blamed.node, join(key, err.key), at, err.message)

    def field(self, spec: FieldSpec, node: Node, key: str, line: int | None) -> Any:
        """One field's value, with its limits checked."""
        value = self.value(spec.shape, node, key, line)
        if value is None:
            return value
        show: Callable[[Any], str] = {"duration": format_duration, "size": format_size}.get(
            spec.shape.kind, str
        )
        if spec.minimum is not None and value < spec.minimum:
            self.fail(node, key, line, f"must be at least {show(spec.minimum)}, got {show(value)}")
        if spec.maximum is not None and value > spec.maximum:
            self.fail(node, key, line, f"must be at most {show(spec.maximum)}, got {show(value)}")
        if spec.nonempty and not value:
            got = "an empty list" if isinstance(node.value, list) else describe(node.value)
            what = "expected a command" if spec.shape.kind == "words" else "must not be empty"
            self.fail(node, key, line, f"{what}, got {got}; leave the key out instead")
        if spec.check is not None:
            try:
                spec.check(value)
            except ValueError as err:
                self.fail(node, key, line, str(err))
        return value

    def value(self, shape: Shape, node: Node, key: str, line: int | None) -> Any:
        """Convert a node to what `shape` describes."""
        if node.value is None and shape.optional:
            return None
        if shape.kind == "section":
            assert shape.cls is not None
            return self.section(shape.cls, node, key, line)
        if shape.kind == "sectionmap":
            assert shape.cls is not None
            return {} if node.value is None else self.sectionmap(shape.cls, node, key, line)
        if shape.kind == "envmap":
            return {} if node.value is None else self.envmap(node, key, line)
        if shape.kind == "words":
            return self.words(node, key, line)
        value, weak = self.scalar(node, key, line)
        kind = shape.kind
        if kind == "str":
            if isinstance(value, str):
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
        elif kind == "choice":
            if isinstance(value, str):
                for choice in shape.choices:
                    if value.lower() == choice.lower():
                        return choice
                for written, meant in shape.aliases:
                    if value.lower() == written.lower():
                        message = f"RoadRunner value {quote(value)}; rrd reads it as {quote(meant)}"
                        self.warn(node, key, line, message)
                        return meant
                close = closest(value, list(shape.choices))
                hint = f"; did you mean '{close}'?" if close else ""
                self.fail(
                    node,
                    key,
                    line,
                    f"expected one of: {', '.join(shape.choices)}, got {describe(value)}{hint}",
                )
        elif kind == "bool":
            if isinstance(value, bool):
                return value
            if weak and isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
        elif kind == "int":
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if (
                weak
                and isinstance(value, str)
                and _INTEGER.fullmatch(value)
                and len(value) <= _MAX_DIGITS
            ):
                return int(value)
        elif kind == "float":
            number: float | None = None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                number = float(value) if abs(value) < _FLOAT_LIMIT else math.inf
            elif weak and isinstance(value, str) and _NUMBER.fullmatch(value):
                number = float(value)
            if number is not None:
                if not math.isfinite(number):
                    got = node.text if node.text is not None else describe(value)
                    self.fail(node, key, line, f"expected a finite number, got {got}")
                return number
        elif (
            kind in ("duration", "size")
            and isinstance(value, (str, int, float))
            and not isinstance(value, bool)
        ):
            try:
                if kind == "duration":
                    return parse_duration(value if isinstance(value, str) else repr(value))
                if not isinstance(value, float):
                    return parse_size(value)
            except ConfigError as err:
                self.fail(node, key, line, err.message)
        if kind == "choice":
            self.fail(
                node,
                key,
                line,
                f"expected one of: {', '.join(shape.choices)}, got {describe(value)}",
            )
        self.fail(node, key, line, self.expected(kind, value))

    def expected(self, kind: str, value: object) -> str:
        """`expected X, got Y`, with a hint for the usual slips."""
        message = f"expected {_EXPECTED.get(kind, kind)}, got {describe(value)}"
        if isinstance(value, str) and kind in ("int", "float", "bool"):
            if re.fullmatch(r"0[0-9]+", value):
                return (
                    message + f"; a leading zero is not octal here: write {int(value)} or "
                    f"0o{value.lstrip('0')}"
                )
            if _NUMBER.fullmatch(value) or value.lower() in ("true", "false"):
                return message + f"; write {value} without quotes"
            if kind == "bool" and value.lower() in ("yes", "no", "on", "off", "y", "n"):
                return message + "; booleans are written true or false"
        if kind == "str" and isinstance(value, (bool, float)):
            return message + "; put the value in quotes"
        return message

    def scalar(self, node: Node, key: str, line: int | None) -> tuple[Any, bool]:
        """A scalar's value with `$` references expanded, and whether it may be read weakly."""
        value = node.value
        weak = node.origin == OVERRIDE
        if isinstance(value, str) and "$" in value:
            try:
                value = expand_env(value, self.environ)
            except ConfigError as err:
                self.fail(node, key, line, err.message)
            weak = True
        return value, weak

    def string(self, node: Node, key: str, line: int | None) -> str:
        """A scalar as an env value or a command word: as written (`1.10` stays "1.10")."""
        value, _ = self.scalar(node, key, line)
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        if isinstance(value, (list, dict)):
            self.fail(node, key, line, f"expected a string, got {describe(value)}")
        return node.text if node.text is not None else str(value).lower()

    def words(self, node: Node, key: str, line: int | None) -> tuple[str, ...]:
        """A command: a string split into words like a shell would (no shell runs), or a list."""
        raw = node.value
        if isinstance(raw, list):
            words = []
            for i, item in enumerate(raw):
                if item.value is None or isinstance(item.value, (list, dict)):
                    self.fail(
                        item,
                        f"{key}[{i}]",
                        item.line,
                        f"expected a string, got {describe(item.value)}",
                    )
                self.note(f"{key}[{i}]", item.line, item)
                words.append(self.string(item, f"{key}[{i}]", item.line))
                if "\0" in words[-1]:
                    self.fail(item, f"{key}[{i}]", item.line, "a word must not hold NUL")
            return tuple(words)
        value, _ = self.scalar(node, key, line)
        if not isinstance(value, str):
            self.fail(node, key, line, self.expected("words", value))
        if "\0" in value:
            self.fail(node, key, line, "a word must not hold NUL")
        if len(value) > _MAX_COMMAND:
            self.fail(
                node,
                key,
                line,
                f"a command of {len(value)} characters is too long to split (at most "
                f"{_MAX_COMMAND}); write it as a list",
            )
        try:
            return tuple(shlex.split(value))
        except ValueError as err:
            self.fail(node, key, line, f"cannot split {quote(value)} into words: {err}")

    def sectionmap(self, cls: type, node: Node, key: str, line: int | None) -> dict[str, Any]:
        """A mapping of names, kept as written, to sections of one class."""
        if not isinstance(node.value, dict):
            self.fail(node, key, line, self.expected("sectionmap", node.value))
        sections = {}
        for name, entry in node.value.items():
            at = entry.key_line if entry.key_line is not None else entry.node.line
            self.note(join(key, name), entry.key_line, entry.node)
            sections[name] = self.section(cls, entry.node, join(key, name), at)
        return sections

    def envmap(self, node: Node, key: str, line: int | None) -> dict[str, str]:
        """An environment map: keys upper-cased as RoadRunner does, values scalars as strings."""
        if not isinstance(node.value, dict):
            self.fail(node, key, line, self.expected("envmap", node.value))
        env: dict[str, str] = {}
        lines: dict[str, int | None] = {}
        for name, entry in node.value.items():
            upper = name.upper()
            sub = join(key, upper)
            at = entry.key_line if entry.key_line is not None else entry.node.line
            self.note(sub, entry.key_line, entry.node)
            if not upper or "=" in upper or "\0" in upper:
                self.fail(
                    entry.node,
                    sub,
                    at,
                    "an environment variable name must not be empty or hold = or NUL",
                )
            if upper in env:
                first = lines[upper]
                where = f" (first at line {first})" if first else ""
                self.fail(entry.node, sub, at, f"duplicate variable once upper-cased{where}")
            value = self.string(entry.node, sub, at)
            if "\0" in value:
                self.fail(entry.node, sub, at, "an environment value must not hold NUL")
            env[upper] = value
            lines[upper] = at
        return env
