"""The operator API's probes: RoadRunner's /health and /ready semantics, from the pools' state,
with rrd's answers during start, saturation, a fatal pool and a graceful stop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rrd.control.api import OperatorApi, Verdict, judge
from rrd.control.commands import Command, Request
from rrd.plugins.base import Plugin


class FakePlugin(Plugin):
    """A plugin whose pool status the test sets."""

    def __init__(self, name: str, pool: dict[str, Any] | None) -> None:
        self.name = name
        self.pool = pool

    def init(self, ctx: Any) -> None:
        pass

    async def serve(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"pool": dict(self.pool)} if self.pool is not None else {"note": "no pool"}


class FakeCore:
    def __init__(self, *plugins: Plugin, state: str = "running") -> None:
        self.state_name = state
        self.started = list(plugins)
        self.requests: list[Request] = []

    def status(self) -> dict[str, Any]:
        return {"state": self.state_name, "plugins": {p.name: p.status() for p in self.started}}

    def request(self, request: Request) -> None:
        self.requests.append(request)

    async def ask(self, command: Command, **args: Any) -> Any:
        return (command, args)

    def plugins(self, names: list[str] | None, kind: type) -> list[Plugin]:
        return [p for p in self.started if isinstance(p, kind) and (not names or p.name in names)]


def pool(
    state: str = "up", ready: int = 2, busy: int = 0, error: str | None = None
) -> dict[str, Any]:
    return {"state": state, "ready": ready, "busy": busy, "size": ready + busy, "last_error": error}


def test_health_holds_under_saturation_while_ready_fails() -> None:
    """RoadRunner's issue #595: every worker busy is healthy, and not ready."""
    api = OperatorApi(FakeCore(FakePlugin("ticker", pool(ready=0, busy=2))))
    assert api.probe("health", ["ticker"]) == (200, [Verdict("ticker", 200, "")])
    code, (verdict,) = api.probe("ready", ["ticker"])
    assert code == 503 and verdict.status_code == 503
    assert verdict.error_message == "all 2 workers are busy"


def test_one_idle_worker_is_ready() -> None:
    api = OperatorApi(FakeCore(FakePlugin("ticker", pool(ready=1, busy=3))))
    assert api.probe("ready", ["ticker"]) == (200, [Verdict("ticker", 200, "")])


def test_a_fatal_pool_says_why_and_a_degraded_one_serves_saying_so() -> None:
    api = OperatorApi(
        FakeCore(
            FakePlugin("dead", pool("fatal", ready=0, error="exit 3 before its handshake")),
            FakePlugin("limping", pool("degraded", ready=1, error="worker 42 crashed")),
        )
    )
    code, verdicts = api.probe("health", None)
    assert code == 503
    assert verdicts == [
        Verdict("dead", 503, "pool fatal: exit 3 before its handshake"),
        Verdict("limping", 200, "pool degraded: worker 42 crashed"),
    ]
    assert api.probe("health", ["limping"])[0] == 200


def test_a_graceful_stop_fails_ready_at_once_and_health_only_when_the_workers_are_gone() -> None:
    ticker = FakePlugin("ticker", pool("stopping", ready=1, busy=1))
    core = FakeCore(ticker, state="stopping")
    api = OperatorApi(core)
    assert api.probe("ready", ["ticker"]) == (503, [Verdict("ticker", 503, "rrd is stopping")])
    assert api.probe("health", ["ticker"]) == (200, [Verdict("ticker", 200, "pool stopping")])
    ticker.pool = pool("stopping", ready=0, busy=0)
    assert api.probe("health", ["ticker"])[0] == 503
    core.started.clear()  # the plugin is down: no longer listed
    assert api.probe("health", ["ticker"]) == (503, [Verdict("ticker", 503, "rrd is stopping")])
    assert api.probe("health", None) == (503, [Verdict("rrd", 503, "rrd is stopping")])


def test_while_starting_nothing_is_healthy_yet() -> None:
    api = OperatorApi(FakeCore(state="starting"))
    assert api.probe("health", ["ticker"]) == (503, [Verdict("ticker", 503, "rrd is starting")])
    assert api.probe("ready", None) == (503, [Verdict("rrd", 503, "rrd is starting")])
    starting = OperatorApi(FakeCore(FakePlugin("ticker", pool("starting", 0)), state="starting"))
    assert starting.probe("health", None)[0] == 503


def test_an_unknown_plugin_is_404_unless_another_probe_fails() -> None:
    api = OperatorApi(FakeCore(FakePlugin("ticker", pool()), FakePlugin("cron", pool(ready=0))))
    code, verdicts = api.probe("health", ["ticker", "nope"])
    assert code == 404
    assert verdicts[1] == Verdict("nope", 404, "no such plugin; known: ticker, cron")
    assert api.probe("health", ["cron", "nope"])[0] == 503


def test_the_unavailable_status_code_is_the_configs() -> None:
    api = OperatorApi(FakeCore(FakePlugin("ticker", pool(ready=0, busy=1))))
    assert api.probe("ready", None, unavailable=599)[0] == 599
    assert api.probe("ready", None, unavailable=599)[1][0].status_code == 599


def test_every_pool_is_probed_when_none_is_named_and_a_plugin_without_a_pool_is_not() -> None:
    api = OperatorApi(FakeCore(FakePlugin("ticker", pool()), FakePlugin("plain", None)))
    assert api.probe("health", None) == (200, [Verdict("ticker", 200, "")])
    assert api.probe("health", ["plain"]) == (
        503,
        [Verdict("plain", 503, "the plugin has no pool")],
    )
    assert OperatorApi(FakeCore()).probe("health", None) == (200, [])


def test_status_carries_each_pools_probes() -> None:
    api = OperatorApi(FakeCore(FakePlugin("ticker", pool(ready=0, busy=2))))
    plugin = api.status()["plugins"]["ticker"]
    assert plugin["health"] == {"status_code": 200, "error": ""}
    assert plugin["ready"] == {"status_code": 503, "error": "all 2 workers are busy"}


def test_the_body_is_roadrunners() -> None:
    verdict = judge("ready", "http", pool(ready=0, busy=0), daemon="running", unavailable=503)
    assert verdict.as_dict() == {
        "plugin_name": "http",
        "error_message": "no worker is ready",
        "status_code": 503,
    }


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        (
            "rrd.Reload",
            {"reset": False},
            (Command.RELOAD, {"reset": False, "source": "rrd reload"}),
        ),
        ("rrd.Reset", ["ticker"], (Command.RESET, {"plugins": ["ticker"]})),
        ("informer.AddWorker", "ticker", (Command.SCALE, {"plugin": "ticker", "workers": "+1"})),
        (
            "rrd.Scale",
            {"plugin": "ticker", "workers": 3},
            (Command.SCALE, {"plugin": "ticker", "workers": 3}),
        ),
    ],
)
def test_the_control_methods_command_the_daemon_through_its_queue(
    method: str, params: Any, expected: tuple[Command, dict[str, Any]]
) -> None:
    api = OperatorApi(FakeCore(FakePlugin("ticker", pool())))
    assert asyncio.run(api.methods()[method](params)) == expected


def test_rrd_stop_queues_a_stop() -> None:
    core = FakeCore()
    assert asyncio.run(OperatorApi(core).methods()["rrd.Stop"]({"now": True})) is True
    (request,) = core.requests
    assert request.command is Command.STOP and request.args == {"now": True}
