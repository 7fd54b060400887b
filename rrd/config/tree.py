"""YAML text to a raw tree whose every value and key keeps its line number.

Room: config. Imports only `rrd.errors`, the standard library and PyYAML.

PyYAML's own constructors drop line numbers, keep the last of duplicate keys silently and
read YAML 1.1 (`on` is true, `1:30` is 90, `0755` is 493). So the text is only composed into
nodes by a SafeLoader subclass with YAML 1.2-like resolvers, and the values are built here:

- booleans are `true` and `false` in any case; `yes`, `no`, `on`, `off` are strings;
- integers are decimal without a leading zero, `0x1f` or `0o755`; `0755` and `1:30` and
  `1_000` are strings (a field that wants an integer then says so, naming the line);
- floats need a dot or an exponent; dates are strings; `~`, `null` and nothing are null;
- keys must be strings, a duplicate key is an error naming both lines, `<<` merges work;
- a `\\uD800`-style escape of a lone surrogate is an error: no program could be given it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import yaml

from rrd.errors import ConfigError

__all__ = [
    "FILE",
    "OVERRIDE",
    "Entry",
    "Node",
    "Origin",
    "describe",
    "join",
    "parse_yaml",
    "printable",
    "quote",
]

Origin: TypeAlias = Literal["file", "-o"]
FILE: Final = "file"
OVERRIDE: Final = "-o"

Scalar: TypeAlias = str | int | float | bool | None


@dataclass
class Node:
    """One raw value: a scalar, a list of Nodes or a dict of Entries, with where it came from.

    `line` is 1-based, None for values given on the command line (`origin` "-o"). `text` is
    a non-string scalar as written (`1.10`, `0x1F`), for where it is used as a string.
    """

    value: str | int | float | bool | list[Node] | dict[str, Entry] | None
    line: int | None
    origin: Origin = FILE
    text: str | None = None


@dataclass
class Entry:
    """A mapping's value with the line of its key."""

    key_line: int | None
    node: Node


def join(path: str, key: str) -> str:
    """The dotted key of `key` inside `path` (quoted if it holds a newline or the like)."""
    key = printable(key)
    return f"{path}.{key}" if path else key


def printable(text: str) -> str:
    """`text` itself when every character of it prints, else `quote(text)`: a key or a name
    a message shows must not break its one line."""
    return text if text.isprintable() else quote(text)


def describe(value: object) -> str:
    """A raw value as an error message names it: `string "4"`, `integer 4`, `a list`."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {quote(value)}"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def quote(text: str) -> str:
    """A string in double quotes, escaped so that a message stays on one line."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if not escaped.isprintable():  # a NEL, a U+2028, a form feed... break lines too
        escaped = "".join(c if c.isprintable() else _escape(c) for c in escaped)
    return '"' + escaped + '"'


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_SEQ, _MAP, _MERGE = _TAG + "seq", _TAG + "map", _TAG + "merge"

_MAX_DIGITS = 1000  # int() refuses more than 4300 digits; no setting needs a tenth of that
_MAX_MERGED = 100_000
"""Keys `<<` may copy in one file: a config merges a few dozen, a chain of merges built to
grow quadratically (an alias bomb's cousin) would otherwise take minutes."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_INT_TEXT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+|0o[0-7]+")
_FLOAT_TEXT = re.compile(
    r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
)


class _Loader(yaml.SafeLoader):
    """Composes nodes only; resolves plain scalars by the rules in the module docstring."""

    yaml_implicit_resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}  # noqa: RUF012


_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$"), list("tTfF")
)
_Loader.add_implicit_resolver(_INT, re.compile(rf"^(?:{_INT_TEXT.pattern})$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT, re.compile(rf"^(?:{_FLOAT_TEXT.pattern})$"), list("-+0123456789.")
)
_Loader.add_implicit_resolver(_NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), [*"~nN", ""])
_Loader.add_implicit_resolver(_MERGE, re.compile(r"^(?:<<)$"), ["<"])


def parse_yaml(text: str, source: str, origin: Origin = FILE) -> Node | None:
    """Compose YAML text into a raw tree; None for an empty document. Errors name `source`."""
    loader = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
        return None if root is None else _Builder(source, origin).build(root, "")
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        what = err.problem or err.context or "unreadable"
        if err.problem and err.context:
            # "while parsing X" reads as a remark; "expected X" precedes "but found Y".
            what = (
                f"{err.context}, {what}" if what.startswith("but ") else f"{what} ({err.context})"
            )
        line = mark.line + 1 if mark is not None and origin == FILE else None
        raise ConfigError(f"bad YAML: {what}", path=source, line=line) from None
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1 if origin == FILE else None
        raise ConfigError(
            f"bad YAML: {err.reason} character U+{err.character:04X}",
            path=source,
            line=line,
        ) from None
    except RecursionError:
        raise ConfigError("bad YAML: nested too deeply", path=source) from None
    finally:
        if loader is not None:
            loader.dispose()


class _Builder:
    """Builds Nodes from composed YAML nodes; an alias is built once and shared."""

    def __init__(self, source: str, origin: Origin) -> None:
        self.source = source
        self.origin: Origin = origin
        self.built: dict[int, Node] = {}
        self.building: set[int] = set()
        self.merge_budget = _MAX_MERGED

    def error(self, ynode: yaml.Node, path: str, message: str) -> ConfigError:
        return ConfigError(message, path=self.source, line=self.line(ynode), key=path or None)

    def line(self, ynode: yaml.Node) -> int | None:
        return ynode.start_mark.line + 1 if self.origin == FILE else None

    def build(self, ynode: yaml.Node, path: str) -> Node:
        done = self.built.get(id(ynode))
        if done is not None:
            return done
        if id(ynode) in self.building:
            raise self.error(ynode, path, "an alias refers to a value that contains it")
        self.building.add(id(ynode))
        if isinstance(ynode, yaml.ScalarNode):
            value = self.scalar(ynode, path)
            text = None if isinstance(value, str) else ynode.value
            node = Node(value, self.line(ynode), self.origin, text)
        elif isinstance(ynode, yaml.SequenceNode):
            if ynode.tag != _SEQ:
                raise self.error(ynode, path, f"unsupported YAML tag {ynode.tag}")
            items = [self.build(item, f"{path}[{i}]") for i, item in enumerate(ynode.value)]
            node = Node(items, self.line(ynode), self.origin)
        else:
            node = Node(self.mapping(ynode, path), self.line(ynode), self.origin)
        self.building.discard(id(ynode))
        self.built[id(ynode)] = node
        return node

    def scalar(self, ynode: yaml.ScalarNode, path: str) -> Scalar:
        text: str = ynode.value
        tag = ynode.tag
        self.check_text(ynode, path)
        if tag == _STR:
            return text
        if tag == _NULL:
            return None
        if tag == _BOOL:
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
        elif tag == _INT:
            if len(text) > _MAX_DIGITS:
                raise self.error(ynode, path, f"integer too long ({len(text)} characters)")
            if _INT_TEXT.fullmatch(text):
                return int(text, 0)
            if re.fullmatch(r"[-+]?[0-9]+", text):
                return int(text, 10)  # an explicit !!int 0755 is decimal
        elif tag == _FLOAT:
            if _FLOAT_TEXT.fullmatch(text) or re.fullmatch(r"[-+]?[0-9]+", text):
                return float(text)
        else:
            raise self.error(ynode, path, f"unsupported YAML tag {tag}")
        kind = tag.removeprefix(_TAG)
        raise self.error(ynode, path, f"bad !!{kind} value {quote(text)}")

    def check_text(self, ynode: yaml.ScalarNode, path: str) -> None:
        """Refuse a lone surrogate (only a `\\u` escape makes one): UTF-8 cannot hold it, so
        neither an argument, an environment value nor a log line could."""
        found = _SURROGATE.search(ynode.value)
        if found is not None:
            code = f"U+{ord(found[0]):04X}"
            raise self.error(ynode, path, f"a string holds the lone surrogate {code}")

    def mapping(self, ynode: yaml.Node, path: str) -> dict[str, Entry]:
        if ynode.tag != _MAP:
            raise self.error(ynode, path, f"unsupported YAML tag {ynode.tag}")
        entries: dict[str, Entry] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in ynode.value:
            if key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                what = "a list" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
                raise self.error(key_node, path, f"keys must be strings, got {what}")
            if key_node.tag != _STR:
                raw = self.scalar(key_node, path)
                raise self.error(
                    key_node,
                    join(path, key_node.value) if key_node.value else path,
                    f"keys must be strings, got {describe(raw)}",
                )
            key = key_node.value
            self.check_text(key_node, path)
            first = entries.get(key)
            if first is not None:
                where = f" (first at line {first.key_line})" if first.key_line else ""
                raise self.error(key_node, join(path, key), f"duplicate key{where}")
            entries[key] = Entry(self.line(key_node), self.build(value_node, join(path, key)))
        seen: set[int] = set()
        for merge in merges:
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if id(source) in seen:  # the same alias again adds nothing
                    continue
                seen.add(id(source))
                merged = self.build(source, path)
                if not isinstance(merged.value, dict):
                    raise self.error(source, path, "<< merges only mappings")
                self.merge_budget -= len(merged.value)
                if self.merge_budget < 0:
                    raise self.error(source, path, f"<< merges copy over {_MAX_MERGED} keys in all")
                for key, entry in merged.value.items():
                    entries.setdefault(key, entry)
        return entries
