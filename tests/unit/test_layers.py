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
    "rrd.stats": 2,
    "rrd.proc": 1,
    "rrd.worker": 3,
    "rrd.pool": 4,
    "rrd.server": 5,
    "rrd.plugins": 6,
    "rrd.daemon": 7,
    "rrd.signals": 7,
    "rrd.control": 7,
    "rrd.http": 7,
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


def imports(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, module) for every `rrd` import in the file, resolving relative ones."""
    module = module or module_name(path)
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
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


def violations(path: Path, module: str | None = None) -> list[str]:
    """Every import in the file that goes against the layers, as `file:line: why`."""
    importer = module or module_name(path)
    importer_room = room(importer)
    found = []
    for line, imported in imports(path, importer):
        imported_room = room(imported)
        where = f"{path.name}:{line}"
        if importer_room == "rrd.sdk":
            if not imported.startswith(SDK_MAY_IMPORT):
                found.append(f"{where}: the SDK may not import {imported}")
        elif imported_room == "rrd.sdk":
            found.append(f"{where}: the daemon may not import the SDK")
        elif RANKS[imported_room] > RANKS[importer_room]:
            found.append(
                f"{where}: {importer} ({importer_room}) imports upward: "
                f"{imported} ({imported_room})"
            )
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_flow_downward(path: Path) -> None:
    assert violations(path) == []


@pytest.mark.parametrize(
    ("module", "source", "why"),
    [
        ("rrd.pool.keeper", "from rrd.daemon import Daemon\n", "imports upward"),
        ("rrd.worker", "import rrd.plugins.ticker\n", "imports upward"),
        ("rrd.pool.free", "from ..server import Server\n", "imports upward"),
        (
            "rrd.protocol.frame",
            "from . import relay\nfrom ..worker import WorkerProcess\n",
            "upward",
        ),
        ("rrd.sdk.worker", "from rrd.worker import WorkerProcess\n", "SDK may not import"),
        ("rrd.pool", "from rrd.sdk import Worker\n", "may not import the SDK"),
    ],
)
def test_the_checker_catches_an_upward_import(
    tmp_path: Path, module: str, source: str, why: str
) -> None:
    fake = tmp_path / "fake.py"
    fake.write_text("import os\n" + source)
    found = violations(fake, module)
    assert len(found) == 1 and why in found[0], found
    assert found[0].startswith(f"fake.py:{source.count(chr(10)) + 1}:")


def test_the_checker_lets_downward_and_sideways_imports_pass(tmp_path: Path) -> None:
    fake = tmp_path / "fake.py"
    fake.write_text("from rrd.worker import WorkerProcess\nfrom rrd.pool.free import FreeQueue\n")
    assert violations(fake, "rrd.pool.keeper") == []
