"""A real Prometheus (Debian's `prometheus` package) that a test starts on its own port and data
dir, scraping the targets it names; and `promtool check metrics`."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until

MISSING = "Debian's prometheus package is not installed (.ci/run installs it)"

Sample = tuple[dict[str, str], float]


def have_prometheus() -> bool:
    return shutil.which("prometheus") is not None


def have_promtool() -> bool:
    return shutil.which("promtool") is not None


needs_prometheus = pytest.mark.skipif(not have_prometheus(), reason=MISSING)
needs_promtool = pytest.mark.skipif(not have_promtool(), reason=MISSING)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (another may take it before us: rare)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def promtool_check(text: str) -> tuple[int, str]:
    """`promtool check metrics` on `text`: its exit code and what it said."""
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode, result.stdout + result.stderr


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:  # a bad query: 400 with an error body
            raise AssertionError(f"{path} {params}: {error.code} {error.read()!r}") from None
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[Sample]:
        """An instant query now: each series' labels (`__name__` included) and value."""
        data = self._get("/api/v1/query", query=expr)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise AssertionError(f"{expr}: a {data['resultType']}, not an instant vector")
        return [(dict(row["metric"]), float(row["value"][1])) for row in data["result"]]

    def last_sample(self, selector: str, window: str = "1m") -> tuple[float, float]:
        """The newest scraped sample of the one series `selector` picks: (its unix time, its
        value), so that a test can say how old what Prometheus knows is."""
        data = self._get("/api/v1/query", query=f"{selector}[{window}]")
        if len(data["result"]) != 1:
            raise AssertionError(f"{selector}: one series expected, got {data['result']}")
        stamp, number = data["result"][0]["values"][-1]
        return float(stamp), float(number)

    def targets(self) -> list[dict[str, Any]]:
        """The active targets: `scrapeUrl`, `health` ("up", "down", "unknown"), `lastError`,
        `lastScrape`..., as /api/v1/targets reports them."""
        return list(self._get("/api/v1/targets", state="active")["activeTargets"])

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def write_config(path: Path, targets: list[str], scrape_interval: str) -> None:
    # JSON is YAML: no YAML writer needed, and no quoting to get wrong.
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": "rrd",
                "scrape_timeout": scrape_interval,
                "static_configs": [{"targets": targets}],
            }
        ],
    }
    path.write_text(json.dumps(config, indent=2))


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextmanager
def running_prometheus(
    tmp_path: Path, targets: list[str], scrape_interval: str = "1s", timeout: float = 30.0
) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` (host:port) as job "rrd", on a free port of 127.0.0.1 with
    its data in tmp_path/prometheus; ready when yielded, stopped (none left) on the way out."""
    if not have_prometheus():
        pytest.skip(MISSING)
    home = tmp_path / "prometheus"
    home.mkdir()
    write_config(home / "prometheus.yml", targets, scrape_interval)
    port = free_port()
    log = home / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                "--storage.tsdb.retention.time=1h",
                f"--web.listen-address=127.0.0.1:{port}",
                "--query.max-concurrency=4",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:

        def started() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"prometheus exited {process.returncode}:\n{prometheus.log_tail()}"
                )
            return ready(prometheus.url)

        wait_until(started, timeout=timeout, step=0.05)
        yield prometheus
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; reaped either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def wait_for_query(
    prometheus: Prometheus,
    expr: str,
    predicate: Callable[[list[Sample]], bool],
    timeout: float = 15.0,
) -> list[Sample]:
    """Query `expr` until its result satisfies `predicate`; the result, or fail at the deadline
    saying what the last query and the targets were."""
    last: list[list[Sample]] = []

    def satisfied() -> bool:
        last[:] = [prometheus.query(expr)]
        return predicate(last[0])

    try:
        wait_until(satisfied, timeout=timeout, step=0.1)
    except AssertionError:
        raise AssertionError(
            f"{expr} within {timeout}s: last {last}; targets {prometheus.targets()}"
        ) from None
    return last[0]


def one_series(test: Callable[[float], bool]) -> Callable[[list[Sample]], bool]:
    """A `wait_for_query` predicate: exactly one series, whose value passes `test`."""
    return lambda samples: len(samples) == 1 and test(samples[0][1])


def value(samples: list[Sample]) -> float:
    """The one value of a query that must have exactly one series."""
    if len(samples) != 1:
        raise AssertionError(f"one series expected, got {samples}")
    return samples[0][1]
