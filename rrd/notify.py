"""sd_notify: tells systemd (or whatever set NOTIFY_SOCKET) that rrd is ready, reloading,
stopping or alive.

Room: the daemon tier (beside daemon, signals, logging). May import only the stdlib,
`sdnotify` and `rrd.errors` (it needs none of rrd).

Wraps the PyPI `sdnotify` package, and uses it only to connect: its `notify()` encodes latin-1
(systemd drops a STATUS that is not UTF-8), swallows every error and blocks when systemd's
queue is full. So `SystemdNotifier(debug=True)` connects (it turns `@name` into an abstract
address, and debug=True lets a connect error surface), then this module makes that socket
non-blocking and sends UTF-8 through it itself. A send that would block or fails is dropped,
counted and remembered, never raised: nothing on the event loop may wait on systemd.

`sdnotify` reads NOTIFY_SOCKET from `os.environ` only, so `from_environ` connects only when
the mapping it is given agrees with `os.environ` (always, when called without one). Without
NOTIFY_SOCKET every method is a no-op. Nothing is removed from `os.environ`: the server hides
these variables from workers itself.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import sdnotify  # type: ignore[import-untyped]

STATUS_MAX = 512
"""Characters of STATUS= kept: one readable line in `systemctl status`, one small datagram."""


class Notifier:
    """One connected notify socket, or none (then every method does nothing)."""

    def __init__(
        self,
        sock: socket.socket | None = None,
        *,
        watchdog_interval: float | None = None,
        exec_pid: int | None = None,
        last_error: str | None = None,
    ) -> None:
        self._socket = sock
        self.watchdog_interval = watchdog_interval
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None: no watchdog."""
        self._exec_pid = exec_pid
        self._errors = 0
        self._last_error = last_error
        if sock is not None:
            sock.setblocking(False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for; a bad NOTIFY_SOCKET gives a disabled one saying why."""
        env = os.environ if environ is None else environ
        interval = _watchdog_interval(env)
        exec_pid = _int(env.get("SYSTEMD_EXEC_PID"))
        address = env.get("NOTIFY_SOCKET")
        sock: socket.socket | None = None
        error: str | None = None
        if address is None:
            pass
        elif not address:
            error = "NOTIFY_SOCKET is empty"
        elif os.environ.get("NOTIFY_SOCKET") != address:
            error = f"NOTIFY_SOCKET={address} differs from os.environ's, which sdnotify reads"
        else:
            try:
                sock = sdnotify.SystemdNotifier(debug=True).socket
            except OSError as exc:
                error = f"NOTIFY_SOCKET={address}: {exc.strerror or exc}"
        return cls(sock, watchdog_interval=interval, exec_pid=exec_pid, last_error=error)

    @property
    def enabled(self) -> bool:
        """A socket is connected: messages go somewhere."""
        return self._socket is not None

    @property
    def errors(self) -> int:
        """Messages dropped because the send would block or failed."""
        return self._errors

    @property
    def last_error(self) -> str | None:
        """Why the last send (or the connect) failed; None if nothing failed."""
        return self._last_error

    def send(self, **fields: str | int) -> bool:
        """One datagram of `KEY=VALUE` lines in the given order; True if it left.

        Values must be one line each (`status()` makes them so). Never blocks, never raises.
        """
        if self._socket is None or not fields:
            return False
        text = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            self._socket.send(text.encode("utf-8", "replace"))
        except OSError as exc:
            self._errors += 1
            self._last_error = f"{', '.join(fields).upper()}: {exc.strerror or exc}"
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        """Start-up or a reload is done (the only end of a reload, even a failed one)."""
        self.send(READY=1, **_status(status))

    def reloading(self, status: str | None = None) -> None:
        """A reload begins: systemd's notify-reload needs MONOTONIC_USEC in the same datagram."""
        self.send(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000, **_status(status))

    def stopping(self, status: str | None = None) -> None:
        """A graceful stop begins."""
        self.send(STOPPING=1, **_status(status))

    def extend_timeout(self, seconds: float) -> None:
        """Ask for `seconds` more of the start, reload or stop timeout (re-send before it ends)."""
        self.send(EXTEND_TIMEOUT_USEC=max(0, int(seconds * 1_000_000)))

    def status(self, text: str) -> None:
        """The one line `systemctl status` shows."""
        self.send(**_status(text))

    def watchdog(self) -> None:
        """I am alive: send every `watchdog_interval` from the main loop."""
        self.send(WATCHDOG=1)

    def main_pid(self) -> None:
        """Tell systemd rrd is the main process, when a wrapper started it (SYSTEMD_EXEC_PID is
        set and is not our pid); else systemd knows it already and nothing is sent.

        The wrapper is then the main pid and NotifyAccess=main drops everything rrd sends:
        such a unit needs NotifyAccess=all.
        """
        if self._exec_pid is not None and self._exec_pid != os.getpid():
            self.send(MAINPID=os.getpid())

    def close(self) -> None:
        """Close the socket; the notifier does nothing from then on."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _status(text: str | None) -> dict[str, str]:
    """STATUS= as one line without NUL (systemd drops a message holding one), capped."""
    if text is None:
        return {}
    line = " ".join(text.replace("\0", " ").splitlines())
    return {"STATUS": line[:STATUS_MAX]}


def _int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of WATCHDOG_USEC in seconds, if the watchdog is set and meant for this process."""
    usec = _int(env.get("WATCHDOG_USEC"))
    if usec is None or usec <= 0:
        return None
    if "WATCHDOG_PID" in env and _int(env["WATCHDOG_PID"]) != os.getpid():
        return None
    return usec / 2 / 1_000_000
