"""The schema engine: annotations to shapes, and the config room's walls."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

import rrd.config
from rrd.config import REQUIRED, Duration, PoolConfig, Size, setting
from rrd.config.schema import Shape, field_specs, shape_of

CONFIG_DIR = Path(rrd.config.__file__).parent


@pytest.mark.parametrize(
    ("annotation", "shape"),
    [
        (int, Shape("int")),
        (float, Shape("float")),
        (bool, Shape("bool")),
        (str, Shape("str")),
        (Duration, Shape("duration")),
        (Size, Shape("size")),
        (Literal["a", "b"], Shape("choice", choices=("a", "b"))),
        (tuple[str, ...], Shape("words")),
        (dict[str, str], Shape("envmap")),
        (PoolConfig, Shape("section", cls=PoolConfig)),
        (PoolConfig | None, Shape("section", optional=True, cls=PoolConfig)),
        (Optional[int], Shape("int", optional=True)),  # noqa: UP045 -- the old spelling works too
        (Duration | None, Shape("duration", optional=True)),
    ],
)
def test_shape_of(annotation: Any, shape: Shape) -> None:
    assert shape_of(annotation) == shape


@pytest.mark.parametrize(
    "annotation",
    [list[str], dict[str, int], tuple[str, str], int | str, Literal[1, 2], bytes, Any],
)
def test_shape_of_refuses(annotation: Any) -> None:
    with pytest.raises(TypeError, match="cannot read a field of type"):
        shape_of(annotation)


def test_field_specs_name_the_bad_field() -> None:
    @dataclass(frozen=True)
    class Bad:
        ok: int = setting(0, "fine")
        items: list[str] = setting([], "not supported")

    with pytest.raises(TypeError, match=r"Bad\.items: the config loader cannot read"):
        field_specs(Bad)


def test_choices_need_a_string_field() -> None:
    @dataclass(frozen=True)
    class Bad:
        n: int = setting(0, "a count", choices=["1"])

    with pytest.raises(TypeError, match="choices= needs a str field"):
        field_specs(Bad)


def test_required_setting() -> None:
    @dataclass(frozen=True)
    class Needs:
        name: str = setting(REQUIRED, "must be given")

    spec = field_specs(Needs)["name"]
    assert spec.required and spec.help == "must be given"
    with pytest.raises(TypeError):
        Needs()


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.py")), ids=lambda p: p.name)
def test_config_imports_only_errors_proc_stdlib_yaml_and_dotenv(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        allowed = (
            top in sys.stdlib_module_names
            or top in ("yaml", "dotenv")
            or name in ("rrd.errors", "rrd.proc")  # proc: finding a program as execvp would
            or name == "rrd.config"
            or name.startswith("rrd.config.")
        )
        assert allowed, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.py")), ids=lambda p: p.name)
def test_config_knows_no_plugin_by_name(path: Path) -> None:
    assert "ticker" not in path.read_text(encoding="utf-8").lower()
