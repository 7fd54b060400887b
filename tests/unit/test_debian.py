"""debian/ agrees with the repository: the version, the files it installs, the config it ships.

The package itself is built and installed by `make deb` and `make test-systemd` (root only);
these checks run everywhere, so that a renamed doc or an edited example config fails here
first, not in a build that CI may skip.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tools.packaged_config import EXAMPLES, packaged

REPO = Path(__file__).resolve().parents[2]
DEBIAN = REPO / "debian"


def test_changelog_version_is_pyprojects() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    found = re.match(r"rrd \(([^)]+)\) \S+; urgency=\w+$", first)
    assert found, f"debian/changelog starts {first!r}"
    assert found[1] == project["version"], (
        f"debian/changelog says {found[1]}, pyproject.toml {project['version']}"
    )


def _listed(name: str) -> list[str]:
    """The sources named by debian/rrd.NAME (install, docs, examples): first word of a line."""
    lines = (DEBIAN / f"rrd.{name}").read_text().splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("name", ["install", "docs", "examples"])
def test_what_the_package_installs_exists(name: str) -> None:
    missing = [path for path in _listed(name) if not (REPO / path).exists()]
    assert not missing, f"debian/rrd.{name} names files that are gone: {missing}"


def test_every_doc_is_packaged() -> None:
    docs = {f"docs/{path.name}" for path in (REPO / "docs").glob("*.md")}
    assert docs <= set(_listed("docs")), f"not in debian/rrd.docs: {docs - set(_listed('docs'))}"


def test_packaged_config_runs_the_installed_example(tmp_path: Path) -> None:
    text = packaged((REPO / "etc/rrd/rr.yaml").read_text())
    config = tmp_path / "rr.yaml"
    config.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "rrd", "config", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    command = re.search(r'^  command: "([^"]+)"$', text, re.MULTILINE)
    assert command, "the packaged config has no server.command"
    program, script = shlex.split(command[1])
    assert program == "python3"
    installed = [line.split() for line in (DEBIAN / "rrd.install").read_text().splitlines()]
    assert script == f"{EXAMPLES}/ticker_app.py"
    assert ["examples/ticker_app.py", EXAMPLES.lstrip("/") + "/"] in installed, (
        "debian/rrd.install must install the worker the packaged config runs"
    )
    assert "  mode: production\n" in text and "  level: info\n" in text
    assert "make run" not in text, "the header still speaks of the repository"


def test_packaged_config_refuses_an_example_it_no_longer_matches() -> None:
    example = (REPO / "etc/rrd/rr.yaml").read_text()
    drifted = example.replace("python3 examples/ticker_app.py", "python3 examples/app.py")
    with pytest.raises(ValueError, match=r"0 copies of .*examples/ticker_app\.py"):
        packaged(drifted)


def test_autopkgtests_exist_and_run() -> None:
    control = (DEBIAN / "tests/control").read_text()
    names = [name for line in re.findall(r"^Tests: (.+)$", control, re.MULTILINE) for name in
             line.split()]  # fmt: skip
    assert names
    for name in names:
        script = DEBIAN / "tests" / name
        assert script.is_file() and os.access(script, os.X_OK), f"{script} is not executable"


def test_maintainer_scripts_and_rules_are_executable_where_needed() -> None:
    assert os.access(DEBIAN / "rules", os.X_OK)
    assert (DEBIAN / "source/format").read_text().strip() == "3.0 (native)"
    compat = (DEBIAN / "control").read_text()
    assert "debhelper-compat (= 13)" in compat
    # At compat 13 dh_installsysusers runs only when asked for: without it, no user rrd.
    assert "dh-sequence-installsysusers" in compat
