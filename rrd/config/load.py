"""Reading `.rr.yaml`: the file, `-o` overrides, `--dotenv` and `${VAR:-default}` expansion.

Room: config. Imports only `rrd.errors`, the standard library, PyYAML and python-dotenv; knows
no plugin by name (plugins hand in their section classes). Never prints or logs: warnings are
returned in `Config.warnings`, and every fault a user can cause is a one-line ConfigError
naming the file, the line and the dotted key (`-o` instead of the file for an override).

The order of work: read and compose the YAML keeping lines; apply the `-o key.path=value`
overrides to that raw tree (a key the schema does not know is an error naming `-o`); reject
unknown sections; check `version`; convert each section, expanding `$VAR`, `${VAR}` and
`${VAR:-default}` in string values. The environment for expansion is `environ` over the
dotenv file: a variable already set wins, as with godotenv. See `convert` for how strings are
read as numbers and booleans.

What the file alone cannot tell (a command that is not installed, a user that does not
exist) is `validate`'s work, after loading.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from rrd.config.convert import Converter, expand_env, suggest
from rrd.config.schema import (
    Config,
    LogsConfig,
    MetricsConfig,
    RpcConfig,
    ServerConfig,
    Shape,
    StatusConfig,
    field_specs,
)
from rrd.config.tree import FILE, OVERRIDE, Entry, Node, parse_yaml, printable, quote
from rrd.errors import ConfigError

if TYPE_CHECKING:
    from dotenv.parser import Binding

__all__ = ["CORE_SECTIONS", "SUPPORTED_VERSIONS", "expand_env", "load_config", "load_dotenv"]

CORE_SECTIONS: Final[dict[str, type]] = {
    "server": ServerConfig,
    "logs": LogsConfig,
    "rpc": RpcConfig,
    "status": StatusConfig,
    "metrics": MetricsConfig,
}
SUPPORTED_VERSIONS: Final = ("3", "2.7")


def load_config(
    path: str | os.PathLike[str],
    *,
    sections: Mapping[str, type] = {},
    overrides: Sequence[str] = (),
    workdir: str | os.PathLike[str] | None = None,
    dotenv: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, override, expand and check a config file; ConfigError for anything wrong in it."""
    workdir_path = Path(os.path.abspath(os.getcwd() if workdir is None else workdir))
    source = Path(os.path.abspath(workdir_path / path))
    schema = _schema(sections)
    root = parse_yaml(_read(source), str(source))
    environ = os.environ if environ is None else environ
    from_dotenv = load_dotenv(workdir_path / dotenv, environ) if dotenv is not None else {}
    env = {**from_dotenv, **environ}
    converter = Converter(str(source), env)

    if root is None or root.value is None:
        raise ConfigError('the file is empty; it needs at least version: "3"', path=str(source))
    if not isinstance(root.value, dict):
        converter.fail(root, "", root.line, f"expected a mapping of sections, got {_what(root)}")
    for override in overrides:
        root = _override(root, override, schema)
    assert isinstance(root.value, dict)
    entries = root.value

    known = ["version", *schema]
    for name, entry in entries.items():
        if name not in schema and name != "version":
            message = f"unknown section '{printable(name)}'" + suggest(name, known)
            converter.fail(entry.node, printable(name), entry.key_line, message)
        converter.note(name, entry.key_line, entry.node)

    version, warnings = _version(entries.get("version"), root, converter)
    converted: dict[str, Any] = {}
    for name, entry in entries.items():
        if name in schema:
            converted[name] = converter.section(schema[name], entry.node, name, entry.key_line)
    return Config(
        version=version,
        source=source,
        workdir=workdir_path,
        server=converted.pop("server", None) or ServerConfig(),
        logs=converted.pop("logs", None) or LogsConfig(),
        rpc=converted.pop("rpc", None),
        status=converted.pop("status", None),
        metrics=converted.pop("metrics", None),
        sections=converted,
        dotenv=from_dotenv,
        warnings=(*warnings, *converter.warnings),
        lines=converter.lines,
        overridden=frozenset(converter.overridden),
    )


def _schema(sections: Mapping[str, type]) -> dict[str, type]:
    """The core sections and the plugins' sections; a bad plugin section is a bug, not a fault."""
    for name, cls in sections.items():
        if name in CORE_SECTIONS or name == "version" or not name:
            raise ValueError(f"a plugin may not own the config section {name!r}")
        field_specs(cls)  # TypeError now for a class the loader cannot read
    return {**CORE_SECTIONS, **dict(sorted(sections.items()))}


def _read(source: Path) -> str:
    try:
        data = source.read_bytes()
    except ValueError as err:  # a NUL byte in the path
        raise ConfigError(f"cannot read {source}: {err}", path=str(source)) from None
    except OSError as err:
        why = err.strerror or str(err)
        raise ConfigError(f"cannot read {source}: {why}", path=str(source)) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"not UTF-8 (byte 0x{data[err.start]:02x})", path=str(source), line=line
        ) from None


def _what(node: Node) -> str:
    return "a list" if isinstance(node.value, list) else f"the scalar {node.value!r}"


def _version(entry: Entry | None, root: Node, converter: Converter) -> tuple[str, list[str]]:
    """The `version` value, which must be the string "3" (or "2.7", with a warning)."""
    if entry is None:
        converter.fail(root, "version", root.line, 'missing; write version: "3" at the top')
    node, line = entry.node, entry.key_line
    value, _ = converter.scalar(node, "version", line)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        written = node.text or str(value)
        wanted = written if written in SUPPORTED_VERSIONS else "3"
        converter.fail(
            node,
            "version",
            line,
            f'expected a string, got {written} unquoted; write version: "{wanted}"',
        )
    if not isinstance(value, str):
        converter.fail(node, "version", line, 'expected a string; write version: "3"')
    if value not in SUPPORTED_VERSIONS:
        converter.fail(
            node, "version", line, f'unsupported version {quote(value)}; rrd reads version "3"'
        )
    warnings = []
    if value == "2.7":
        warnings.append(
            'config version "2.7" is read as version "3"; check the file with '
            '`rrd config check` and write version: "3"'
        )
    return value, warnings


def _override(root: Node, text: str, schema: Mapping[str, type]) -> Node:
    """Apply one `-o key.path=value` to the raw tree; the tree is copied along the path."""
    dotted, sep, raw = text.partition("=")
    parts = dotted.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"expected key.path=value, got {quote(text)}", path="-o")
    top = parts[0]
    if top == "version":
        shape = Shape("str")
    elif top in schema:
        shape = Shape("section", cls=schema[top])
    else:
        shown = printable(top)
        raise ConfigError(
            f"unknown section '{shown}'" + suggest(top, ["version", *schema]), path="-o", key=shown
        )
    return _set(root, parts, 0, {top: shape}, raw)


def _set(
    node: Node | None, parts: list[str], depth: int, fields: Mapping[str, Shape] | None, raw: str
) -> Node:
    """A copy of `node` with the override at `parts[depth:]`; `fields` None is an env map."""
    name = parts[depth]
    dotted = ".".join(printable(part) for part in parts[: depth + 1])
    if fields is None:
        shape = Shape("str")
    elif name in fields:
        shape = fields[name]
    else:
        raise ConfigError("unknown key" + suggest(name, list(fields)), path="-o", key=dotted)
    entries = dict(node.value) if node is not None and isinstance(node.value, dict) else {}
    if fields is None:  # the override replaces a variable however its name was cased
        entries = {k: e for k, e in entries.items() if k.upper() != name.upper()}
    old = entries.get(name)
    if depth + 1 == len(parts):
        child = _override_value(raw, shape, dotted)
    elif shape.kind == "section" and shape.cls is not None:
        below = {n: spec.shape for n, spec in field_specs(shape.cls).items()}
        child = _set(old.node if old else None, parts, depth + 1, below, raw)
    elif shape.kind == "sectionmap" and shape.cls is not None:  # any name, then its section
        below = {parts[depth + 1]: Shape("section", cls=shape.cls)}
        child = _set(old.node if old else None, parts, depth + 1, below, raw)
    elif shape.kind == "envmap":
        if depth + 2 < len(parts):
            raise ConfigError(
                "an environment variable has no keys below it",
                path="-o",
                key=".".join(printable(part) for part in parts[: depth + 2]),
            )
        child = _set(old.node if old else None, parts, depth + 1, None, raw)
    else:
        raise ConfigError(f"'{name}' has no keys below it", path="-o", key=dotted)
    entries[name] = Entry(old.key_line if old and child.origin == FILE else None, child)
    if node is None or not isinstance(node.value, dict):
        return Node(entries, None, OVERRIDE)
    return Node(entries, node.line, node.origin, node.text)


def _override_value(raw: str, shape: Shape, dotted: str) -> Node:
    """The value of an override: YAML flow (`[a, b]`, `{A: b}`) for a list or mapping field,
    else the string itself, which the converter reads as the field's type."""
    flow = ("words", "envmap", "section", "sectionmap")
    if shape.kind in flow and raw.lstrip().startswith(("[", "{")):
        try:
            value = parse_yaml(raw, "-o", OVERRIDE)
        except ConfigError as err:
            raise ConfigError(err.message, path="-o", key=dotted) from None
        if value is not None:
            return value
    return Node(raw, None, OVERRIDE)


# A line as python-dotenv reads it, to say what is wrong with one it could not read.
_DOTENV_LINE = re.compile(
    r"\s*(?:export\s+)?('[^']+'|[^=#\s]+)[^\S\r\n]*(=[^\S\r\n]*)?(.*)", re.DOTALL
)
_QUOTED = {
    "'": re.compile(r"'(?:\\.|[^'\\])*'", re.DOTALL),
    '"': re.compile(r'"(?:\\.|[^"\\])*"', re.DOTALL),
}
_NEWLINE = re.compile(r"\r\n|\n|\r")


def load_dotenv(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Read a dotenv file as python-dotenv does (`KEY=VALUE`, `export`, quotes, comments,
    multi-line quoted values) and expand `${VAR}` and `${VAR:-default}` in its values.

    A variable set in `environ` (default `os.environ`) wins over the file, for expansion as
    it does for the config: `LOGDIR=${BASE}/logs` takes BASE from the environment if it is
    set there, else from the lines above. A 'single-quoted' value is not expanded, as with
    godotenv. The values returned are the file's own, expanded.
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8-sig") as file:
            text = file.read()
    except OSError as err:
        raise ConfigError(f"cannot read {source}: {err.strerror or err}", path=source) from None
    except UnicodeDecodeError:  # before ValueError, whose subclass it is
        raise ConfigError("not UTF-8", path=source) from None
    except ValueError as err:  # a NUL byte in the path
        raise ConfigError(f"cannot read {source}: {err}", path=source) from None
    # Imported here: python-dotenv brings tempfile, shutil, bz2 and lzma (~1 MiB of rrd's RSS).
    from dotenv.parser import parse_stream
    from dotenv.variables import parse_variables

    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.key is None and not binding.error:
            continue  # a blank line or a comment
        line, written = _dotenv_line(binding)
        if binding.error or binding.key is None or binding.value is None:
            raise _dotenv_error(written, source, line)
        value = binding.value
        if "${" in value and not _single_quoted(written):
            lookup = {**values, **environ}
            value = "".join(atom.resolve(lookup) for atom in parse_variables(value))
        if "\0" in value:
            raise ConfigError("a value must not hold NUL", path=source, line=line, key=binding.key)
        values[binding.key] = value
    return values


def _dotenv_line(binding: Binding) -> tuple[int, str]:
    """The line a binding starts on, and its text from there: python-dotenv counts the blank
    lines before it as its own."""
    original = binding.original.string
    text = original.lstrip()
    return binding.original.line + len(
        _NEWLINE.findall(original[: len(original) - len(text)])
    ), text


def _single_quoted(written: str) -> bool:
    match = _DOTENV_LINE.match(written)
    return match is not None and match[3].startswith("'")


def _dotenv_error(written: str, source: str, line: int) -> ConfigError:
    """What is wrong with a line python-dotenv could not read, or read as a name alone."""
    first = _NEWLINE.split(written, maxsplit=1)[0].strip()
    match = _DOTENV_LINE.match(written)
    if match is None or match[2] is None:
        return ConfigError(f"expected KEY=VALUE, got {quote(first)}", path=source, line=line)
    key, value = match[1].strip("'"), match[3]
    quoted = _QUOTED.get(value[:1])
    if quoted is not None:
        closed = quoted.match(value)
        if closed is None:
            return ConfigError(f"missing closing {value[0]}", path=source, line=line, key=key)
        rest = _NEWLINE.split(value[closed.end() :], maxsplit=1)[0].strip()
        return ConfigError(
            f"unexpected text after the closing quote: {quote(rest)}",
            path=source,
            line=line,
            key=key,
        )
    return ConfigError(f"expected KEY=VALUE, got {quote(first)}", path=source, line=line)
