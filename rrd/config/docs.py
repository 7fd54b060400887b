"""Every config key with its type, default and help: what `rrd config docs` prints.

Room: config. Imports only `rrd.errors`, the standard library and the rest of `rrd.config`.

A key rrd accepts only for RoadRunner's sake (`setting(ignored=...)`) is marked "(ignored;
RoadRunner compatibility)" with the reason, and the keys below it are named in its help
rather than listed one by one. A choice's aliases are named after its help.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rrd.config.load import CORE_SECTIONS, SUPPORTED_VERSIONS
from rrd.config.schema import FieldSpec, Shape, field_specs
from rrd.config.units import format_duration, format_size

__all__ = ["SettingDoc", "iter_settings", "render_docs"]

_OPTIONAL_SECTIONS = {"rpc": "the control socket is a unix socket, and workers get no RR_RPC"}
"""Core sections that may be absent, and what their absence means."""


@dataclass(frozen=True)
class SettingDoc:
    """One config key as documented: `server.on_init.exec_timeout`, `duration`, `1m`, its help."""

    key: str
    type: str
    default: str
    help: str


_TYPE_NAMES = {
    "bool": "bool",
    "int": "int",
    "float": "float",
    "str": "string",
    "duration": "duration",
    "size": "size",
    "words": "string or list",
    "envmap": "map of strings",
    "section": "section",
    "sectionmap": "map of sections",
}

IGNORED = "(ignored; RoadRunner compatibility)"


def _type_name(shape: Shape) -> str:
    if shape.kind == "choice":
        return "|".join(shape.choices)
    return _TYPE_NAMES[shape.kind]


def _default(spec: FieldSpec) -> str:
    value: Any = spec.default
    if spec.required:
        return "required"
    if value is None:
        return "absent"
    kind = spec.shape.kind
    if kind == "section":
        return ""
    if kind == "bool":
        return "true" if value else "false"
    if kind == "duration":
        return format_duration(value)
    if kind == "size":
        return format_size(value)
    if kind == "words":
        return shlex.join(value) if value else "[]"
    if kind == "sectionmap":
        return ", ".join(value) if value else "{}"
    if kind == "envmap":
        return ", ".join(f"{k}={v}" for k, v in value.items()) if value else "{}"
    if kind in ("str", "choice") and value == "":
        return '""'
    return str(value)


def _first_line(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    if doc.startswith(f"{cls.__name__}("):  # the signature @dataclass writes when there is none
        return ""
    return doc.split("\n", 1)[0]


def _help(spec: FieldSpec) -> str:
    """The field's help, with its aliases, or marked as ignored with the keys below it."""
    help = spec.help
    if spec.shape.aliases:
        read = ", ".join(f"{written} as {meant}" for written, meant in spec.shape.aliases)
        help += f" RoadRunner's values read: {read}."
    if spec.ignored is None:
        return help
    if spec.shape.cls is not None:
        below = ", ".join(field_specs(spec.shape.cls))
        each = "Each name's keys" if spec.shape.kind == "sectionmap" else "Keys"
        help += f" {each}: {below}."
    return f"{IGNORED} {help} Ignored: {spec.ignored}."


def _walk(cls: type, prefix: str) -> Iterator[SettingDoc]:
    for name, spec in field_specs(cls).items():
        key = f"{prefix}.{name}"
        yield SettingDoc(key, _type_name(spec.shape), _default(spec), _help(spec))
        if spec.ignored is not None or spec.shape.cls is None:
            continue
        if spec.shape.kind == "sectionmap":
            yield from _walk(spec.shape.cls, f"{key}.*")
        else:
            yield from _walk(spec.shape.cls, key)


def iter_settings(sections: Mapping[str, type] = {}) -> Iterator[SettingDoc]:
    """Every key: version, server.*, logs.*, rpc.*, then each plugin section by name."""
    versions = " or ".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
    yield SettingDoc(
        "version",
        "string",
        "required",
        f'The config format, quoted: {versions} ("2.7" is read as "3").',
    )
    for name, cls in [*CORE_SECTIONS.items(), *sorted(sections.items())]:
        help = _first_line(cls)
        default = "absent" if name in _OPTIONAL_SECTIONS else ""
        if name in _OPTIONAL_SECTIONS:
            help += f" Absent: {_OPTIONAL_SECTIONS[name]}."
        elif name not in CORE_SECTIONS:
            help += " Absent: the plugin is off."
        yield SettingDoc(name, "section", default, help.strip())
        yield from _walk(cls, name)


def render_docs(sections: Mapping[str, type] = {}, width: int = 100) -> str:
    """An aligned table of every key, each starting one line; the other cells wrap in their
    columns, so continuation lines start with spaces. The help wraps to `width` columns."""
    rows = [("KEY", "TYPE", "DEFAULT", "DESCRIPTION")]
    rows += [(s.key, s.type, s.default, s.help) for s in iter_settings(sections)]
    # Long types and defaults wrap in their column rather than widen it for every row.
    widths = [max(len(r[0]) for r in rows)] + [
        min(max(len(r[i]) for r in rows), cap) for i, cap in ((1, 14), (2, 10))
    ]
    indent = sum(widths) + 2 * 3
    help_width = max(width - indent, 30)
    lines = []
    for key, type_, default, help in rows:
        cells = [[key], _wrap_cell(type_, widths[1]), _wrap_cell(default, widths[2])]
        wrapped = textwrap.wrap(help, help_width) or [""]
        row = 0
        while row < max(len(c) for c in cells) or wrapped:
            parts = [c[row] if row < len(c) else "" for c in cells]
            head = "".join(f"{part:<{w}}  " for part, w in zip(parts, widths, strict=True))
            # A word too long for its column (an address as a default) pushes the help down.
            text = wrapped.pop(0) if wrapped and len(head) <= indent else ""
            lines.append((head + text).rstrip())
            row += 1
    return "\n".join(lines) + "\n"


def _wrap_cell(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width`, broken after `|` or a space; a long word overflows."""
    lines = [""]
    for word in re.split(r"(?<=[| ])", text):
        if lines[-1] and len((lines[-1] + word).rstrip()) > width:
            lines.append("")
        lines[-1] += word
    return [line.rstrip() for line in lines]
