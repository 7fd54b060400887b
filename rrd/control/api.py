"""The operator API: every answer rrd gives an operator, whichever way the question came.

Room: control. Imports plugins' capabilities, proc, protocol.rpc and control.commands; reads
the daemon through the small `Core` protocol below and commands it only through its queue.
The control socket serves `methods()` (RoadRunner's `Service.Method` names, then rrd's own);
the HTTP endpoints serve `health`, `readiness` and the metrics source (`status`, `workers`,
`histograms`). One place, so the socket, `/health` and `/metrics` never disagree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from rrd.control.commands import Command, Request
from rrd.fsm import ROADRUNNER_STATES
from rrd.plugins.base import Informer, Measured, Plugin, Reporter, Resettable, Scheduling
from rrd.proc import ProcessSample, sampled
from rrd.protocol.rpc import RpcError

if TYPE_CHECKING:
    from rrd.stats import Histogram
    from rrd.worker import WorkerInfo

Method = Callable[[Any], Awaitable[Any]]

Probe = Literal["health", "ready"]


class Core(Protocol):
    """What the API needs of the daemon: its state, its plugins, its status, its queue."""

    @property
    def state_name(self) -> str: ...
    @property
    def started(self) -> list[Plugin]: ...
    def status(self) -> dict[str, Any]: ...
    def request(self, request: Request) -> None: ...
    async def ask(self, command: Command, **args: Any) -> Any: ...
    def plugins(self, names: list[str] | None, kind: type) -> list[Plugin]: ...


@dataclass(frozen=True)
class Verdict:
    """One plugin's answer to a probe, as RoadRunner's status plugin writes it."""

    plugin_name: str
    status_code: int
    error_message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "plugin_name": self.plugin_name,
            "error_message": self.error_message,
            "status_code": self.status_code,
        }


def judge(
    probe: Probe, name: str, pool: Mapping[str, Any] | None, *, daemon: str, unavailable: int
) -> Verdict:
    """Health: the pool has a worker ready or working, so it can serve at all. Readiness: it
    has an idle worker, so a job now would be taken at once (503 under saturation). While rrd
    stops, readiness fails at once and health holds until the workers are gone."""
    if pool is None:
        return Verdict(name, unavailable, "the plugin has no pool")
    ready, busy = int(pool.get("ready", 0)), int(pool.get("busy", 0))
    state = str(pool.get("state", ""))
    why = f"pool {state}" + (f": {pool['last_error']}" if pool.get("last_error") else "")
    if daemon == "starting":
        return Verdict(name, unavailable, "rrd is starting")
    if probe == "ready":
        if daemon in ("stopping", "stopped"):
            return Verdict(name, unavailable, "rrd is stopping")
        if ready < 1:
            busy_why = f"all {busy} workers are busy" if busy else "no worker is ready"
            return Verdict(name, unavailable, busy_why if state == "up" else why)
    elif ready + busy < 1:
        return Verdict(name, unavailable, why if state != "up" else "no worker is serving")
    return Verdict(name, 200, why if state not in ("up", "") else "")


class OperatorApi:
    """Reads and commands the daemon for the control socket and the HTTP endpoints."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.samples: Mapping[int, ProcessSample] = {}
        """The workers' memory and CPU as last read (`sample`), by pid."""

    # Probes and the metrics source

    def probe(
        self, probe: Probe, names: list[str] | None, *, unavailable: int = 503
    ) -> tuple[int, list[Verdict]]:
        """Each named plugin's verdict (every plugin with a pool when none is named) and the
        status of the whole: 200 when every verdict is; else 404 when the only failures are
        names that are no plugin of rrd's, else `unavailable`."""
        state = self.core.state_name
        reports = {p.name: p.status() for p in self.core.started if isinstance(p, Reporter)}
        pools = {name: report["pool"] for name, report in reports.items() if "pool" in report}
        verdicts = []
        for name in names or list(pools):
            if name in reports:
                pool = pools.get(name)
                verdicts.append(judge(probe, name, pool, daemon=state, unavailable=unavailable))
            elif state in ("starting", "stopping", "stopped"):
                verdicts.append(Verdict(name, unavailable, f"rrd is {state}"))
            else:
                known = ", ".join(pools) or "none"
                verdicts.append(Verdict(name, 404, f"no such plugin; known: {known}"))
        if not verdicts and state != "running" and state != "reloading":
            verdicts.append(Verdict("rrd", unavailable, f"rrd is {state}"))
        codes = {v.status_code for v in verdicts}
        if codes <= {200}:
            return 200, verdicts
        return (404 if codes <= {200, 404} else unavailable), verdicts

    def status(self) -> dict[str, Any]:
        """`rrd status`: the daemon's status, each plugin with its health and readiness."""
        report = self.core.status()
        state = self.core.state_name
        for name, plugin in report.get("plugins", {}).items():
            if "pool" not in plugin:
                continue
            for probe in get_args(Probe):  # judged on this very report, not a new one
                verdict = judge(probe, name, plugin["pool"], daemon=state, unavailable=503)
                plugin[probe] = {"status_code": verdict.status_code, "error": verdict.error_message}
        return report

    def workers(self, plugin: str) -> list[WorkerInfo]:
        (found,) = self.core.plugins([plugin], Informer)
        assert isinstance(found, Informer)
        return found.workers()

    async def sample(self, plugins: list[Plugin] | None = None) -> Mapping[int, ProcessSample]:
        """Read the memory and CPU of the workers of `plugins` (all) in a thread: /proc is
        never read on the loop. Kept in `samples` for what is shown next."""
        found = self.core.started if plugins is None else plugins
        pids = [i.pid for p in found if isinstance(p, Informer) for i in p.workers()]
        self.samples = await sampled(pids)
        return self.samples

    def histograms(self, plugin: str) -> Mapping[str, Histogram]:
        found = next((p for p in self.core.started if p.name == plugin), None)
        return found.histograms() if isinstance(found, Measured) else {}

    # The control socket

    def methods(self) -> dict[str, Method]:
        """The control socket's methods: RoadRunner's names, then rrd's own."""
        ask = self.core.ask
        return {
            "informer.List": self._informer_list,
            "informer.Workers": self._informer_workers,
            "informer.AddWorker": lambda name: ask(Command.SCALE, plugin=name, workers="+1"),
            "informer.RemoveWorker": lambda name: ask(Command.SCALE, plugin=name, workers="-1"),
            "resetter.List": self._resetter_list,
            "resetter.Reset": lambda name: ask(Command.RESET, plugins=[_name(name)]),
            "rrd.Status": self._status,
            "rrd.Workers": self._workers,
            "rrd.Reload": lambda params: ask(
                Command.RELOAD, reset=_flag(params, "reset", True), source="rrd reload"
            ),
            "rrd.Reset": lambda params: ask(Command.RESET, plugins=_names(params)),
            "rrd.Scale": lambda params: ask(
                Command.SCALE,
                plugin=_name(_field(params, "plugin")),
                workers=_field(params, "workers"),
            ),
            "rrd.Stop": self._stop,
            "ticker.List": self._schedules,
            "ticker.Pause": lambda params: self._schedule_call(params, "pause"),
            "ticker.Resume": lambda params: self._schedule_call(params, "resume"),
            "ticker.Run": lambda params: self._schedule_call(params, "run"),
        }

    async def _schedules(self, params: Any) -> dict[str, list[dict[str, Any]]]:
        """Each scheduling plugin's schedules (`rrd ticker list`)."""
        plugins = self.core.plugins(_names(params), Scheduling)
        return {p.name: p.schedules() for p in plugins if isinstance(p, Scheduling)}

    async def _schedule_call(self, params: Any, action: str) -> dict[str, Any]:
        """Pause, resume or run one schedule: {"plugin": "ticker", "schedule": NAME}."""
        name = _name(_field(params, "schedule"))
        plugin_name = params.get("plugin") or "ticker"
        (plugin,) = self.core.plugins([_name(plugin_name)], Scheduling)
        assert isinstance(plugin, Scheduling)
        try:
            if action == "pause":
                changed = plugin.pause(name)
            elif action == "resume":
                changed = plugin.resume(name)
            else:
                plugin.run_now(name)
                changed = True
        except ValueError as exc:
            raise RpcError(str(exc)) from None
        return {"plugin": plugin.name, "schedule": name, "action": action, "changed": changed}

    async def _informer_list(self, params: Any) -> list[str]:
        return [p.name for p in self.core.started if isinstance(p, Informer)]

    async def _resetter_list(self, params: Any) -> list[str]:
        return [p.name for p in self.core.started if isinstance(p, Resettable)]

    async def _informer_workers(self, params: Any) -> dict[str, Any]:
        plugins = self.core.plugins([_name(params)], Informer)
        samples = await self.sample(plugins)
        workers = []
        for plugin in plugins:
            assert isinstance(plugin, Informer)
            for info in plugin.workers():  # as they are now, after the sampling's wait
                code, text = ROADRUNNER_STATES[info.state]
                sample = samples.get(info.pid, _GONE)
                workers.append(
                    {
                        "pid": info.pid,
                        "status": code,
                        "numExecs": info.execs,
                        "created": int(info.created * 1e9),
                        "memoryUsage": sample.rss,
                        "CPUPercent": sample.cpu_percent,
                        "command": info.command,
                        "statusStr": text,
                    }
                )
        return {"workers": workers}

    async def _workers(self, params: Any) -> dict[str, list[dict[str, Any]]]:
        plugins = self.core.plugins(_names(params), Informer)
        samples = await self.sample(plugins)
        table: dict[str, list[dict[str, Any]]] = {}
        for plugin in plugins:
            assert isinstance(plugin, Informer)
            table[plugin.name] = [
                {
                    "pid": info.pid,
                    "status": info.state.value,
                    "execs": info.execs,
                    "memory": samples.get(info.pid, _GONE).rss,
                    "cpu": samples.get(info.pid, _GONE).cpu_percent,
                    "created": info.created,
                }
                for info in plugin.workers()
            ]
        return table

    async def _status(self, params: Any) -> dict[str, Any]:
        return self.status()

    async def _stop(self, params: Any) -> bool:
        self.core.request(Request(Command.STOP, {"now": _flag(params, "now", False)}))
        return True


_GONE = ProcessSample(rss=0, cpu_percent=0.0)
"""A worker that started or left while the samples were read."""


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise RpcError(f"expected a plugin name, got {value!r}")
    return value


def _names(params: Any) -> list[str] | None:
    if params is None or params == []:
        return None
    if isinstance(params, str):
        return [params]
    if isinstance(params, list) and all(isinstance(n, str) for n in params):
        return list(params)
    raise RpcError(f"expected plugin names, got {params!r}")


def _field(params: Any, key: str) -> Any:
    if not isinstance(params, dict) or key not in params:
        raise RpcError(f"expected an object with {key!r}, got {params!r}")
    return params[key]


def _flag(params: Any, key: str, default: bool) -> bool:
    if isinstance(params, dict):
        return bool(params.get(key, default))
    return default
