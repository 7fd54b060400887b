"""contrib/grafana/rrd.json: valid, every query names only metrics rrd exports, panels laid out
without clashes."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

from rrd.http.metrics import MetricsExposition
from tests.helpers import ROOT
from tests.unit.test_metrics import FakeSource

DASHBOARD = ROOT / "contrib" / "grafana" / "rrd.json"

# RoadRunner's families carry the plugin in their name: the dashboard writes `rr_${plugin}_...`.
EXPORTED = {
    "rr_<plugin>_workers_ready",
    "rr_<plugin>_workers_working",
    "rr_<plugin>_workers_invalid",
    "rr_<plugin>_total_workers",
    "rr_<plugin>_worker_memory_bytes",
    "rr_<plugin>_workers_memory_bytes",
    "rrd_pool_state",
    "rrd_pool_size",
    "rrd_pool_spares",
    "rrd_pool_backoff_attempt",
    "rrd_pool_restarts_total",
    "rrd_pool_exec_duration_seconds_bucket",
    "rrd_ticker_ticks_total",
    "rrd_ticker_ticks_in_flight",
    "rrd_ticker_lateness_seconds_bucket",
    "rrd_config_reloads_total",
    "rrd_build_info",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
}

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
KEYWORDS |= {"and", "or", "unless", "inf", "nan"}


def load() -> dict[str, Any]:
    with DASHBOARD.open() as file:
        dashboard: dict[str, Any] = json.load(file)
    return dashboard


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside a collapsed row too."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects; `${plugin}` in a name reads `<plugin>`."""
    text = re.sub(r"\$\{plugin\}|\$plugin\b", "<plugin>", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)  # label values
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)  # matchers, ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    identifiers = re.finditer(r"(?<![\w.])([A-Za-z_:<][\w:<>]*)(\s*\()?", text)
    return {m[1] for m in identifiers if not m[2] and m[1].lower() not in KEYWORDS}


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", text)
            assert selector, f"variable {variable['name']}: {text}"
            yield f"variable {variable['name']}", selector[1]


def test_the_metric_name_reader_reads_names_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(rrd_x_bucket{plugin="a b",le!="1"}'
        "[$__rate_interval]))) > on (plugin) group_left rr_${plugin}_ready == bool 1 "
        "or process_cpu_seconds_total offset 5m"
    )
    assert metric_names(expr) == {
        "rrd_x_bucket",
        "rr_<plugin>_ready",
        "process_cpu_seconds_total",
    }


def test_every_query_names_only_metrics_rrd_exports() -> None:
    dashboard = load()
    seen = set()
    for where, expr in queries(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        assert names <= EXPORTED, f"{where}: {names - EXPORTED} in {expr}"
        seen |= names
    assert seen == EXPORTED  # the list holds no name the dashboard has stopped using


def test_every_listed_name_is_in_the_exposition() -> None:
    body, _ = MetricsExposition(FakeSource()).render(None)
    exported = {line.split("{")[0].split(" ")[0] for line in body.decode().splitlines()}
    missing = {n for n in EXPORTED if n.replace("<plugin>", "ticker") not in exported}
    assert not missing


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    dashboard = load()
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"]
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), sorted(ids)

    def cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        return set(
            itertools.product(
                range(box["x"], box["x"] + box["w"]), range(box["y"], box["y"] + box["h"])
            )
        )

    for first, second in itertools.combinations(dashboard["panels"], 2):
        assert not cells(first) & cells(second), (first["title"], second["title"])


def test_every_panel_reads_the_chosen_datasource() -> None:
    dashboard = load()
    names = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert names == ["datasource", "instance", "plugin"]
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    for panel in all_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
