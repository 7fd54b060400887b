"""Fuzzing the config loader: random YAML built from the schema's own keys, and mutations of
the example config. `load_config` and `validate` only ever return a Config or raise a
ConfigError of one line naming the file; the reload path's next step, `diff`, takes any two
configs that loaded. A handful of the nastiest files also go through `rrd config check`.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rrd.config import Config, LogsConfig, RpcConfig, ServerConfig, diff, load_config, validate
from rrd.config.schema import FieldSpec, Shape, field_specs
from rrd.errors import EX_CONFIG, ConfigError
from rrd.plugins import registry
from rrd.plugins.ticker import TickerConfig
from tests.helpers import ROOT

SECTIONS = registry.config_sections(registry.installed())
SCHEMA: dict[str, type] = {
    "server": ServerConfig,
    "logs": LogsConfig,
    "rpc": RpcConfig,
    "ticker": TickerConfig,
    **SECTIONS,
}
EXAMPLE = ROOT / "etc" / "rrd" / "rr.yaml"
ENVIRON = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "W": "3", "EMPTY": ""}

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def all_keys() -> list[str]:
    """Every key name the schema knows, at any depth."""
    names: set[str] = set()

    def walk(cls: type) -> None:
        for name, spec in field_specs(cls).items():
            names.add(name)
            if spec.shape.cls is not None and spec.shape.cls not in seen:
                seen.add(spec.shape.cls)
                walk(spec.shape.cls)

    seen: set[type] = set()
    for cls in SCHEMA.values():
        walk(cls)
    return sorted(names | {"version"})


KEYS = all_keys()


@functools.cache
def example_config() -> Config:
    return load_config(EXAMPLE, sections=SECTIONS, environ=ENVIRON, workdir=ROOT)


def check_loaded(path: Path, **kwargs: Any) -> Config | None:
    """Load and validate `path`: a Config, or None after a ConfigError of one line naming
    the file. Any other exception fails the test."""
    try:
        config = load_config(path, sections=SECTIONS, environ=ENVIRON, workdir=ROOT, **kwargs)
        validate(config, environ=ENVIRON)
    except ConfigError as err:
        text = str(err)
        assert len(text.splitlines()) == 1, text
        assert err.path in (str(path), "-o"), text
        assert text.startswith(str(err.path)), text
        return None
    # Whatever loaded can be diffed with the example, both ways: a reload's next step.
    example = example_config()
    for old, new in ((example, config), (config, example), (config, config)):
        plan = diff(old, new)
        for line in plan.summary():
            assert len(line.splitlines()) == 1, line
    assert not diff(config, config).summary()
    return config


# --- random documents from the schema's keys ---

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 300),
    st.integers(),
    st.integers(10**18, 10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "1s",
            "0",
            "-5s",
            "1ms",
            "100ms",
            "1h30m",
            "0.5us",
            "2562047h",
            "9999999999h",
            "64MiB",
            "1KB",
            "1.5GB",
            "99999999999999999999TiB",
            "${W}",
            "${W:-4}",
            "${NOPE:-1s}",
            "${",
            "$$",
            "skip",
            "parallel",
            "debug",
            "production",
            "pipes",
            "tcp://127.0.0.1:6001",
            "unix:///tmp/x.sock",
            "python3 -c pass",
            f"{sys.executable} -c pass",
            "'unbalanced",
            "a\0b",
            "true",
            "0755",
            "",
            "é漢字🙂",
        ]
    ),
    st.text(max_size=20),
)


GOOD: dict[str, st.SearchStrategy[Any]] = {
    "bool": st.booleans(),
    "int": st.one_of(st.integers(0, 4), st.sampled_from([16, 256, 1000])),
    "float": st.sampled_from([1, 1.5, 2.0, 0.2, 0.5, 1.0]),
    "duration": st.sampled_from(["1s", "100ms", "5s", "1m", "1h30m", "250ms", "2s", 1]),
    "size": st.sampled_from(["1KiB", "64MiB", "256MiB", 2048, "1MB", "4GiB"]),
    "str": st.sampled_from(["", "stderr", "stdout", "tcp://127.0.0.1:6001", "x"]),
    "words": st.sampled_from(
        ["python3 -c pass", f"{sys.executable} -c pass", [sys.executable, "-c", "pass"]]
    ),
    "envmap": st.dictionaries(
        st.sampled_from(["A", "b", "PATH", "RR_MODE", "X_1"]),
        st.sampled_from(["1", "", "${W}", "${NOPE:-x}", 1.5, True]),
        max_size=3,
    ),
}
ANYTHING = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), SCALARS, max_size=3),
)


def values_for(shape: Shape, depth: int) -> st.SearchStrategy[Any]:
    """A value of the field's own shape, good for it; one in twenty times anything at all."""
    if shape.kind in ("section", "sectionmap") and shape.cls is not None and depth < 5:
        own = sections(shape.cls, depth + 1)
        if shape.kind == "sectionmap":
            own = st.dictionaries(st.sampled_from(["ticker", "http", "x"]), own, max_size=2)
    elif shape.kind == "choice":
        own = st.sampled_from([*shape.choices, *(written for written, _ in shape.aliases)])
    else:
        own = GOOD.get(shape.kind, SCALARS)
    if shape.optional:
        own = st.none() | own
    return st.integers(0, 19).flatmap(lambda roll: own if roll else ANYTHING)


@functools.cache
def sections(cls: type, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """A mapping of some of the section's keys, now and then with a stray key."""
    specs: dict[str, FieldSpec] = field_specs(cls)
    fields = {name: values_for(spec.shape, depth) for name, spec in specs.items()}
    stray = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), SCALARS, max_size=1)
    return st.builds(
        lambda chosen, extra: {**extra, **chosen},
        st.fixed_dictionaries({}, optional=fields),
        st.integers(0, 9).flatmap(lambda roll: st.just({}) if roll else stray),
    )


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A whole config file: `version` (mostly "3"), some sections, rarely a stray one."""
    document: dict[str, Any] = {}
    if draw(st.integers(0, 19)):
        document["version"] = "3"
    else:
        document["version"] = draw(st.sampled_from(["2.7", 3, "4"]) | SCALARS)
    document["server"] = {"command": [sys.executable, "-c", "pass"]}
    for name, cls in SCHEMA.items():
        if draw(st.booleans()):
            document[name] = draw(sections(cls)) if draw(st.integers(0, 19)) else draw(SCALARS)
    if not draw(st.integers(0, 19)):
        document[draw(st.sampled_from(KEYS) | st.text(max_size=8))] = draw(SCALARS)
    flow = draw(st.sampled_from([False, None, True]))
    return yaml.safe_dump(document, default_flow_style=flow, allow_unicode=draw(st.booleans()))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / ".rr.yaml"


@given(documents())
@FUZZ
def test_random_documents_load_or_raise_one_line_config_errors(scratch: Path, text: str) -> None:
    scratch.write_text(text, encoding="utf-8")
    check_loaded(scratch)


@given(st.sampled_from(sorted(SCHEMA)), st.data())
@settings(max_examples=100, deadline=None, derandomize=False)
def test_a_valid_base_with_one_random_section_loads_or_says_why(
    scratch: Path, name: str, data: st.DataObject
) -> None:
    document = {
        "version": "3",
        "server": {"command": [sys.executable, "-c", "pass"]},
        name: data.draw(sections(SCHEMA[name])),
    }
    scratch.write_text(yaml.safe_dump(document), encoding="utf-8")
    check_loaded(scratch)


# --- mutations of the example config ---

EXAMPLE_LINES = EXAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
VALUE_LINES = [i for i, line in enumerate(EXAMPLE_LINES) if ":" in line and "#" not in line[:3]]
NASTY_SCALARS = [
    "0",
    "-1",
    "4",
    "~",
    "''",
    "[]",
    "{}",
    "yes",
    "0x7fffffff",
    "9" * 999,
    "9" * 5000,
    "1e999",
    "-1e999",
    ".nan",
    "!!float 1e999",
    "!!int '" + "9" * 999 + "'",
    "!!python/object:os.system {}",
    '"\\ud800"',
    '"\\0"',
    "*undefined",
    "&a [*a]",
    "${W}",
    "'${W:-0}'",
    "1s",
    "64MiB",
    "99999999999999TiB",
    "[" * 300 + "]" * 300,
]
GARBAGE = [
    b"\x00",
    b"\x00\x00\x00",
    b"\xff\xfe",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\t",
    b"\r",
    b"\x85",
    "\u2028".encode(),
    "\ufeff".encode(),
    "🙂漢".encode(),
    b"\x1b[31m",
    b": : :",
    b"- - -",
    b"{",
    b"]",
    b"&x ",
    b"*x ",
    b"<<: *x\n",
    b"!!binary ",
    b"---\n",
    b"...\n",
    b"%YAML 1.1\n",
    b"? ",
    b"|\n",
    b">-\n",
]


def mutate(data: st.DataObject) -> bytes:
    """The example config with one to four edits at line level, then perhaps bytes inserted."""
    lines = list(EXAMPLE_LINES)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(lines) - 1), label="line")
        action = data.draw(
            st.sampled_from(
                [
                    "delete",
                    "value",
                    "duplicate",
                    "indent",
                    "dedent",
                    "anchor",
                    "nest",
                    "swap",
                    "uncomment",
                ]
            ),
            label="action",
        )
        line = lines[at]
        if action == "delete":
            del lines[at]
        elif action == "value" and ":" in line:
            key = line.split(":", 1)[0]
            lines[at] = f"{key}: {data.draw(st.sampled_from(NASTY_SCALARS))}\n"
        elif action == "duplicate":
            lines.insert(at, line)
        elif action == "indent":
            lines[at] = " " * data.draw(st.integers(1, 5)) + line
        elif action == "dedent":
            lines[at] = line.lstrip(" ")
        elif action == "anchor" and ":" in line and not line.rstrip().endswith(":"):
            key, _, value = line.partition(":")
            lines[at] = f"{key}: &v{at} {value.strip() or '~'}\n"
            later = data.draw(st.integers(at + 1, len(lines)))
            other = data.draw(st.sampled_from(VALUE_LINES)) if VALUE_LINES else at
            target = EXAMPLE_LINES[other].split(":", 1)[0]
            lines.insert(later, f"{target}: *v{at}\n")
        elif action == "nest":
            depth = data.draw(st.integers(1, 60))
            key = line.split(":", 1)[0] if ":" in line else "x"
            lines[at] = f"{key}: " + "{a: " * depth + "1" + "}" * depth + "\n"
        elif action == "uncomment":
            # The example holds every key, most commented out with its default: bring some in.
            for index in range(at, len(lines)):
                if re.match(r"\s*#\s*[a-z_]+:", lines[index]):
                    lines[index] = re.sub(r"#\s?", "", lines[index], count=1)
                    break
        elif action == "swap" and at + 1 < len(lines):
            lines[at], lines[at + 1] = lines[at + 1], lines[at]
        if not lines:
            lines = ["\n"]
    raw = "".join(lines).encode("utf-8")
    for _ in range(data.draw(st.integers(0, 2), label="garbage")):
        at = data.draw(st.integers(0, len(raw)))
        raw = raw[:at] + data.draw(st.sampled_from(GARBAGE)) + raw[at:]
    return raw


@given(st.data())
@FUZZ
def test_mutations_of_the_example_config_load_or_raise_one_line_config_errors(
    scratch: Path, data: st.DataObject
) -> None:
    scratch.write_bytes(mutate(data))
    check_loaded(scratch)


def test_the_example_config_itself_loads() -> None:
    assert check_loaded(EXAMPLE) is not None


# --- what the fuzzing found, kept as examples ---

FOUND = {
    "float-from-a-huge-int": "ticker: {pool: {restart: {multiplier: " + "9" * 400 + "}}}",
    "infinite-float": "ticker: {pool: {restart: {multiplier: 1e999}}}",
    "infinite-float-by-reference": "ticker: {pool: {restart: {multiplier: '${X:-1e999}'}}}",
    "infinite-float-by-tag": "ticker: {pool: {restart: {multiplier: !!float 1e400}}}",
    "log-path-too-long": "logs: {output: " + "a" * 5000 + "}",
    "log-path-too-long-nested": "logs: {output: /tmp/" + "a/" * 3000 + "x}",
    "surrogate-in-env": 'server: {command: python3 -c pass, env: {A: "\\ud800"}}',
    "surrogate-in-a-key": 'server: {command: python3 -c pass, env: {"\\udc80": a}}',
    "surrogate-in-command": 'server: {command: [python3, "\\udfff"]}',
    "newline-in-a-key": 'logs: {"\\n": 1}',
    "newline-in-a-section-name": '"a\\nb": 1',
    "line-separator-in-a-choice": 'logs: {level: "deb\\Lug"}',
    "next-line-in-a-key-below": 'server: {command: python3 -c pass, env: {"\\N": x}, "\\N": 1}',
    "command-too-long-to-split": 'server: {command: "' + "a " * 70_000 + '"}',
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_what_fuzzing_found_is_refused_on_its_line(name: str, tmp_path: Path) -> None:
    body = FOUND[name]
    server = "#" if body.startswith("server:") else "server: {command: python3 -c pass}"
    path = tmp_path / ".rr.yaml"
    path.write_text(f'version: "3"\n{server}\n{body}\n', encoding="utf-8")
    began = time.process_time()
    with pytest.raises(ConfigError) as caught:
        config = load_config(path, sections=SECTIONS, environ=ENVIRON, workdir=ROOT)
        validate(config, environ=ENVIRON)
    assert time.process_time() - began < 2.0
    assert str(caught.value).startswith(f"{path}:3: ")
    assert len(str(caught.value).splitlines()) == 1


# --- alias bombs, huge and deep files: refused or bounded, quickly ---


def laughs(levels: int, fanout: int, *, where: str) -> str:
    """A billion-laughs document: each anchor a list of `fanout` aliases of the one before."""
    lines = ['version: "3"', f"x0: &x0 [{', '.join(['lol'] * fanout)}]"]
    for level in range(1, levels):
        refs = ", ".join([f"*x{level - 1}"] * fanout)
        lines.append(f"x{level}: &x{level} [{refs}]")
    top = f"*x{levels - 1}"
    if where == "command":
        lines += ["server:", f"  command: {top}"]
    elif where == "env":
        lines += ["server:", "  command: python3 -c pass", f"  env: {{A: {top}}}"]
    elif where == "channels":
        lines += ["logs:", f"  channels: {{a: {{output: {top}}}}}"]
    else:
        lines += [f"{where}: {top}"]
    return "\n".join(lines) + "\n"


def merge_bomb(keys: int, chain: int) -> str:
    """`<<` merges chained so that each copies all the keys before it."""
    first = ", ".join(f"k{i}: 1" for i in range(keys))
    lines = ['version: "3"', f"m0: &m0 {{{first}}}"]
    for level in range(1, chain):
        lines.append(f"m{level}: &m{level} {{<<: [*m{level - 1}, *m{level - 1}], n{level}: 1}}")
    lines += ["server:", "  command: python3 -c pass", f"  env: {{<<: *m{chain - 1}}}"]
    return "\n".join(lines) + "\n"


BOMBS: dict[str, Callable[[], str]] = {
    "laughs-unknown-section": lambda: laughs(12, 9, where="x12"),
    "laughs-in-command": lambda: laughs(12, 9, where="command"),
    "laughs-in-env": lambda: laughs(12, 9, where="env"),
    "laughs-in-channels": lambda: laughs(12, 9, where="channels"),
    "laughs-as-ticker": lambda: laughs(12, 9, where="ticker"),
    "merge-chain": lambda: merge_bomb(50, 9000),
    "deep-flow-lists": lambda: 'version: "3"\nserver: ' + "[" * 20_000 + "]" * 20_000 + "\n",
    "deep-flow-maps": lambda: 'version: "3"\nserver: ' + "{a: " * 20_000 + "1" + "}" * 20_000,
    "deep-block": lambda: 'version: "3"\n' + "".join(" " * i + "a:\n" for i in range(3000)),
    "many-keys": lambda: (
        'version: "3"\nserver:\n  command: python3 -c pass\n  env:\n'
        + "".join(f"    K{i}: v\n" for i in range(20_000))
    ),
    "huge-scalar": lambda: 'version: "3"\nserver:\n  command: "' + "a" * 1_000_000 + '"\n',
    "huge-int": lambda: 'version: "3"\nticker: {pool: {num_workers: ' + "9" * 100_000 + "}}\n",
    "huge-unknown-key": lambda: 'version: "3"\nticker: {' + "k" * 1_000_000 + ": 1}\n",
    "huge-unknown-section": lambda: 'version: "3"\n' + "s" * 1_000_000 + ": 1\n",
    "huge-choice": lambda: 'version: "3"\nticker: {overlap: ' + "skip" * 250_000 + "}\n",
    "huge-unsplittable": lambda: 'version: "3"\nserver: {command: "\'' + "a" * 100_000 + '"}\n',
    "huge-duration": lambda: 'version: "3"\nticker: {interval: ' + "1s" * 500_000 + "}\n",
    "huge-reference": lambda: 'version: "3"\nserver: {user: "${' + "V" * 1_000_000 + '}"}\n',
    "nul-bytes": lambda: 'version: "3"\x00\x00\nserver: {}\n',
    "recursive-merge": lambda: 'version: "3"\nserver: &s {<<: *s}\n',
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bombs_are_refused_or_bounded_quickly(name: str, tmp_path: Path) -> None:
    path = tmp_path / ".rr.yaml"
    path.write_text(BOMBS[name](), encoding="utf-8")
    began = time.process_time()
    check_loaded(path)
    spent = time.process_time() - began
    assert spent < 5.0, f"{name} took {spent:.1f}s of CPU"


@pytest.mark.parametrize("name", [name for name in sorted(BOMBS) if "laughs" in name])
def test_alias_bombs_allocate_little(name: str, tmp_path: Path) -> None:
    """A billion laughs is nine to the twelfth strings when expanded: it must never be."""
    path = tmp_path / ".rr.yaml"
    path.write_text(BOMBS[name](), encoding="utf-8")
    tracemalloc.start()
    try:
        check_loaded(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{name} allocated {peak / 2**20:.0f} MiB"


# --- the CLI on the nastiest cases: exit 0 or 78, one line, no traceback ---

NASTIEST = ["laughs-in-command", "deep-flow-lists", "huge-unknown-key"]


def test_config_check_on_the_nastiest_files_says_one_line(tmp_path: Path) -> None:
    cases = {name: BOMBS[name]().encode() for name in NASTIEST}
    cases["surrogate"] = b'version: "3"\nserver:\n  command: ["python3", "\\ud800"]\n'
    cases["bad-utf8"] = b'version: "3"\nserver:\n  command: "python3 \xff"\n'
    cases["long-log-path"] = b'version: "3"\nlogs: {output: ' + b"a" * 5000 + b"}\n"
    cases["valid"] = EXAMPLE.read_bytes()
    for name, content in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(content)
        done = subprocess.run(
            [sys.executable, "-m", "rrd", "config", "check", "-c", str(path)],
            cwd=ROOT,
            capture_output=True,
            timeout=30,
        )
        err = done.stderr.decode("utf-8", "replace")
        assert "Traceback" not in err, (name, err)
        assert done.returncode in (0, EX_CONFIG), (name, done.returncode, err)
        if done.returncode == EX_CONFIG:
            assert err.count("\n") == 1 and err.startswith(f"rrd: {path}"), (name, err[:300])
        else:
            assert name == "valid", (name, done.stdout)
