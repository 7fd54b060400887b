"""The `status` and `metrics` sections' listeners: which routes at which address, kept in step
with the config.

Room: http. Imports control.api (the answers), config and http.server; prometheus_client only
through http.metrics, and only when a `metrics` section asks for it.

RoadRunner runs its status and metrics plugins on separate addresses; rrd does the same, and
serves both from one listener when they share an address. A reload that moves an address binds
the new one before it lets the old one go, and keeps the old ones whole when it cannot.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING

from rrd.config import MetricsConfig, StatusConfig
from rrd.control.api import OperatorApi, Probe
from rrd.errors import RrdError
from rrd.http.server import Handler, HttpRequest, HttpResponse, HttpServer

if TYPE_CHECKING:
    from rrd.http.metrics import MetricsExposition

log = logging.getLogger("rrd.http")

Routes = dict[str, Handler]


class ListenFailed(RrdError):
    """A status or metrics address rrd cannot listen on; `key` names the config key."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class Endpoints:
    """The HTTP listeners of the `status` and `metrics` sections, by address."""

    def __init__(self, api: OperatorApi) -> None:
        self.api = api
        self.servers: dict[str, HttpServer] = {}
        self.status: StatusConfig | None = None
        self.served: dict[str, str | None] = {"status": None, "metrics": None}
        """Where each section is served, for `rrd status`."""
        self._exposition: MetricsExposition | None = None

    async def apply(
        self, status: StatusConfig | None, metrics: MetricsConfig | None, *, at_start: bool
    ) -> None:
        """Serve what the sections say. At start an address rrd cannot listen on is fatal
        (ListenFailed); at a reload it is logged and the listeners stay as they were."""
        wanted: dict[str, Routes] = {}
        keys: dict[str, str] = {}
        if status is not None:
            wanted.setdefault(status.address, {}).update(
                {"/health": self._prober("health"), "/ready": self._prober("ready")}
            )
            keys[status.address] = "status.address"
        if metrics is not None:
            wanted.setdefault(metrics.address, {})["/metrics"] = self._scrape
            keys.setdefault(metrics.address, "metrics.address")
            if self._exposition is None:
                from rrd.http.metrics import MetricsExposition

                self._exposition = MetricsExposition(self.api)
        opened: dict[str, HttpServer] = {}
        try:
            for address, routes in wanted.items():
                if address not in self.servers:
                    opened[address] = await self._listen(address, routes, keys[address])
        except ListenFailed as failed:
            for server in opened.values():
                await server.close()
            if at_start:
                raise
            log.error(
                f"{failed.key}: {failed}; the status and metrics listeners stay as they were",
                extra={"event": "http.listen_failed", "key": failed.key, "error": str(failed)},
            )
            return
        self.status = status
        self.served = {
            "status": status.address if status else None,
            "metrics": metrics.address if metrics else None,
        }
        if metrics is None:
            self._exposition = None
        for address in [a for a in self.servers if a not in wanted]:
            await self.servers.pop(address).close()
            log.info(
                f"stopped listening on {address}",
                extra={"event": "http.closed", "address": address},
            )
        for address, server in self.servers.items():
            server.set_routes(wanted[address])
        self.servers.update(opened)

    async def close(self) -> None:
        """Stop listening; every connection is closed."""
        while self.servers:
            _, server = self.servers.popitem()
            await server.close()

    async def _listen(self, address: str, routes: Routes, key: str) -> HttpServer:
        server = HttpServer(routes, name=key.partition(".")[0])
        try:
            await server.start(address)
        except (OSError, ValueError) as exc:
            errno = exc.errno if isinstance(exc, OSError) else None
            why = os.strerror(errno) if errno else str(exc)
            raise ListenFailed(f"cannot listen on {address}: {why}", key) from None
        log.info(
            f"serving {', '.join(sorted(routes))} on {address}",
            extra={"event": "http.listening", "address": address, "routes": sorted(routes)},
        )
        return server

    def _prober(self, probe: Probe) -> Handler:
        def answer(request: HttpRequest) -> HttpResponse:
            names = [n for value in request.query.get("plugin", []) for n in value.split(",") if n]
            unavailable = self.status.unavailable_status_code if self.status else 503
            code, verdicts = self.api.probe(probe, names or None, unavailable=unavailable)
            body = json.dumps([v.as_dict() for v in verdicts]).encode()
            return HttpResponse(code, body, "application/json")

        return answer

    async def _scrape(self, request: HttpRequest) -> HttpResponse:
        await self.api.sample()  # the workers' memory, read in a thread
        if self._exposition is None:  # the section went while the samples were read
            return HttpResponse(404, b"metrics are off\n")
        body, content_type = self._exposition.render(request.headers.get("accept"))
        return HttpResponse(200, body, content_type)
