"""The house rule of design.md: imports flow downward only. Walks the AST of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "rrd"

# Rank of each room: a module may import its own rank or lower, never higher.
RANKS = {
    "rrd": 0,
    "rrd.errors": 0,
    "rrd.protocol": 1,
    "rrd.config": 1,
    "rrd.fsm": 2,
    "rrd.clock": 2,
    "rrd.backoff": 2,
    "rrd.worker": 3,
    "rrd.pool": 4,
    "rrd.server": 5,
    "rrd.plugins": 6,
    "rrd.supervisor": 7,
    "rrd.control": 7,
    "rrd.watch": 7,
    "rrd.notify": 7,
    "rrd.logging": 7,
    "rrd.cli": 8,
    "rrd.__main__": 8,
}
SDK_MAY_IMPORT = ("rrd.sdk", "rrd.protocol", "rrd.errors")


def room(module: str) -> str:
    """The longest RANKS key that is `module` or a package above it."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in RANKS or candidate == "rrd.sdk":
            return candidate
    raise AssertionError(f"{module} belongs to no room of design.md")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every `rrd` import in the file, resolving relative ones."""
    tree = ast.parse(path.read_text(), str(path))
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
    return [(line, name) for line, name in found if name == "rrd" or name.startswith("rrd.")]


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_flow_downward(path: Path) -> None:
    importer = module_name(path)
    importer_room = room(importer)
    for line, imported in imports(path):
        imported_room = room(imported)
        where = f"{path.relative_to(PACKAGE.parent)}:{line}"
        if importer_room == "rrd.sdk":
            assert imported.startswith(SDK_MAY_IMPORT), (
                f"{where}: the SDK may not import {imported}"
            )
            continue
        assert imported_room != "rrd.sdk", f"{where}: the daemon may not import the SDK"
        assert RANKS[imported_room] <= RANKS[importer_room], (
            f"{where}: {importer} ({importer_room}) imports upward: {imported} ({imported_room})"
        )


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    assert RANKS[room("rrd.supervisor")] > RANKS[room("rrd.pool")]
    assert room("rrd.plugins.ticker") == "rrd.plugins"
    assert room("rrd.protocol.frame") == "rrd.protocol"
