"""One worker process: spawn, pid handshake, exec, graceful stop, kill, stderr relay.

Room: worker (beside fsm). Imports protocol, errors, fsm and the stdlib (+ psutil for RSS);
never pool, server or anything above. A Worker lives for exactly one OS process: replacing
it is the Pool's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil

from rrd.errors import (
    BootError,
    ExecTimeout,
    FrameError,
    ScriptOpenError,
    SoftJobError,
    WorkerCrashed,
)
from rrd.fsm import RetireReason, WorkerFSM, WorkerState
from rrd.protocol.control import (
    Payload,
    parse_pid,
    payload_frame,
    pid_request,
    split_payload,
    stop_request,
)
from rrd.protocol.frame import DEFAULT_MAX_PAYLOAD, Flag, Frame, Stream
from rrd.protocol.relay import read_frame, write_frame

log = logging.getLogger("rrd.worker")

STDERR_LINE_LIMIT = 64 * 1024
STDERR_DRAIN_TIMEOUT = 1.0
"""How long after a worker's exit its stderr may still be read before the relay is dropped."""
PONG = Frame(stream=Stream.PONG)
_RELAY_FAULTS = (FrameError, EOFError, ConnectionError, OSError)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to start one worker of a pool; built by the server."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    plugin: str
    cwd: str | None = None
    allocate_timeout: float = 60.0
    max_payload: int = DEFAULT_MAX_PAYLOAD
    user: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class WorkerInfo:
    """A snapshot of one worker for `rrd workers` and `informer.Workers`."""

    pid: int
    state: WorkerState
    execs: int
    created: float
    rss: int
    command: str
    reason: RetireReason | None = None
    last_error: str | None = None


def install_child_watcher() -> None:
    """On Python 3.11, watch children through pidfds instead of one thread per child.

    3.12 and later pick the pidfd watcher by themselves; so does this on kernels >= 5.3.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return
    asyncio.set_child_watcher(asyncio.PidfdChildWatcher())


def describe_exit(returncode: int | None) -> str:
    """`exit code 3` or `killed by SIGKILL`, for log lines and errors."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


_unreaped: set[int] = set()
"""Process groups of the workers this process started and has not reaped yet."""


def kill_all_workers() -> int:
    """SIGKILL every worker not yet reaped: the last resort on the way out. Returns how many."""
    for pid in list(_unreaped):
        kill_group(pid)
    return len(_unreaped)


def kill_group(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal a worker's whole process group (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class _ReapAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's subprocess protocol, plus an event set the moment the process is reaped.

    On Python 3.11 `Process.wait()` returns only once every pipe has closed, which a grandchild
    that escaped the process group (and kept stdout or stderr) can put off for ever.
    """

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.reaped = asyncio.Event()
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport

    def process_exited(self) -> None:
        super().process_exited()
        self.reaped.set()


async def _spawn(spec: WorkerSpec) -> tuple[asyncio.subprocess.Process, _ReapAwareProtocol]:
    """What `asyncio.create_subprocess_exec` does, with the reap-aware protocol."""
    loop = asyncio.get_running_loop()
    pipe = asyncio.subprocess.PIPE
    transport, protocol = await loop.subprocess_exec(
        lambda: _ReapAwareProtocol(STDERR_LINE_LIMIT, loop),
        *spec.argv,
        stdin=pipe,
        stdout=pipe,
        stderr=pipe,
        env=dict(spec.env),
        cwd=spec.cwd,
        start_new_session=True,
        user=spec.user or None,
        group=spec.group or None,
    )
    _unreaped.add(transport.get_pid())
    return asyncio.subprocess.Process(transport, protocol, loop), protocol


@dataclass(eq=False)
class Worker:
    """One running worker process and its relay. Create with `await Worker.start(spec)`."""

    spec: WorkerSpec
    process: asyncio.subprocess.Process
    protocol: _ReapAwareProtocol
    created: float = field(default_factory=time.time)
    started_at: float = field(default_factory=time.monotonic)
    execs: int = 0
    last_error: str | None = None
    relay_pid: int = 0
    _fsm: WorkerFSM = field(default_factory=WorkerFSM)
    _exited: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def state(self) -> WorkerState:
        return self._fsm.state

    @property
    def reason(self) -> RetireReason | None:
        return self._fsm.reason

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @classmethod
    async def start(cls, spec: WorkerSpec, *, server_pid: int | None = None) -> Worker:
        """Spawn the process and finish the pid handshake within `allocate_timeout`."""
        began = time.monotonic()
        try:
            process, protocol = await _spawn(spec)  # not under a timeout: it could orphan a fork
        except (OSError, ValueError, KeyError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise BootError(f"cannot start {spec.argv[0]!r}: {reason}") from None
        worker = cls(spec, process, protocol)
        worker._tasks = [
            asyncio.create_task(worker._relay_stderr(), name=f"stderr-{process.pid}"),
            asyncio.create_task(worker._watch_exit(), name=f"exit-{process.pid}"),
        ]
        remaining = spec.allocate_timeout - (time.monotonic() - began)
        try:
            async with asyncio.timeout(max(remaining, 0.001)):
                await worker._handshake(server_pid or os.getpid())
        except TimeoutError:
            await worker.kill()
            raise BootError(
                f"no pid handshake within {spec.allocate_timeout:g}s", pid=worker.pid
            ) from None
        except ScriptOpenError as exc:
            await worker.kill()
            raise BootError(exc.text.strip(), pid=worker.pid) from None
        except _RELAY_FAULTS as exc:
            await worker.kill()
            raise BootError(
                f"failed its pid handshake ({worker._fault(exc)})", pid=worker.pid
            ) from None
        except BaseException:
            await worker.kill()
            raise
        worker._fsm.to(WorkerState.READY)
        log.info(
            "worker started",
            extra={
                "event": "worker.started",
                "worker_pid": worker.pid,
                "plugin": spec.plugin,
                "duration_ms": round((time.monotonic() - began) * 1000, 1),
            },
        )
        return worker

    async def _handshake(self, server_pid: int) -> None:
        await self._send(pid_request(server_pid))
        frame = await read_frame(self._stdout, max_payload=self.spec.max_payload)
        self.relay_pid = parse_pid(frame)

    async def exec(self, payload: Payload, timeout: float | None = None) -> Payload:
        """Send one payload and return the reply.

        Raises SoftJobError for an ERROR reply (the worker stays usable), ExecTimeout when no
        reply came in `timeout` seconds and WorkerCrashed when the relay broke; after those
        two the process has been killed.
        """
        self._fsm.to(WorkerState.WORKING)
        try:
            async with asyncio.timeout(timeout or None):
                await self._send(payload_frame(payload))
                reply = await self._read_reply()
        except SoftJobError as exc:
            self.execs += 1
            self.last_error = str(exc)
            self._finish_job()
            raise
        except TimeoutError:
            self.last_error = f"no reply within {timeout:g}s"
            await self.kill()
            raise ExecTimeout(f"{self.last_error}; killed", pid=self.pid) from None
        except _RELAY_FAULTS as exc:
            await self.kill()  # first, so that the message can give its exit code
            self.last_error = self._fault(exc)
            raise WorkerCrashed(self.last_error, pid=self.pid) from None
        except BaseException:
            # Cancelled mid-exec: the reply is still coming, so the relay is out of step.
            await self.kill()
            raise
        self.execs += 1
        self._finish_job()
        return reply

    def _finish_job(self) -> None:
        if self._fsm.state is WorkerState.WORKING:
            self._fsm.to(WorkerState.READY)

    async def _read_reply(self) -> Payload:
        """One reply; a streamed reply (STREAM bit) is joined into one payload."""
        chunks: list[Payload] = []
        while True:
            frame = await read_frame(self._stdout, max_payload=self.spec.max_payload)
            if frame.stream & Stream.PING:
                await self._send(PONG)
            if frame.stream & (Stream.PONG | Stream.STOP) or (
                frame.stream & Stream.PING and not frame.payload and not frame.options
            ):
                continue
            if frame.flags & Flag.ERROR:
                raise SoftJobError(frame.payload.decode("utf-8", "replace"), pid=self.pid)
            if frame.flags & Flag.CONTROL:
                raise FrameError(f"unexpected control frame during exec: {frame.payload[:40]!r}")
            chunks.append(split_payload(frame))
            if not frame.stream & Stream.STREAM:
                break
        if len(chunks) == 1:
            return chunks[0]
        return Payload(b"".join(c.body for c in chunks), chunks[0].context)

    def retire(self, reason: RetireReason) -> bool:
        """Mark a busy worker to be retired after its job; False if it is not busy."""
        if self._fsm.state is WorkerState.WORKING:
            self._fsm.to(WorkerState.DRAINING, reason)
            return True
        return False

    async def stop(self, grace: float, reason: RetireReason) -> None:
        """Ask the worker to exit (stop frame), then SIGTERM, then SIGKILL, `grace` apart."""
        if self._fsm.can(WorkerState.STOPPING):
            self._fsm.to(WorkerState.STOPPING, reason)
            with contextlib.suppress(*_RELAY_FAULTS):
                await self._send(stop_request())
            if await self._wait_exit(grace):
                return
            log.warning(
                "worker ignored the stop frame; sending SIGTERM",
                extra={
                    "event": "worker.terminate",
                    "worker_pid": self.pid,
                    "plugin": self.spec.plugin,
                    "grace_s": grace,
                },
            )
            kill_group(self.pid, signal.SIGTERM)
            if await self._wait_exit(grace):
                return
        await self.kill()

    async def kill(self) -> None:
        """SIGKILL the process group now and wait until the process is reaped."""
        if self._fsm.state.live and self._fsm.state is not WorkerState.STOPPING:
            self._fsm.to(WorkerState.ERRORED)
        if self.process.returncode is None:  # once reaped, its pid may belong to another
            kill_group(self.pid)
        await self._exited.wait()

    async def wait_exited(self) -> int:
        """Wait until the process is reaped (and its output relayed); return its exit code."""
        await self._exited.wait()
        return self.process.returncode if self.process.returncode is not None else -1

    async def _wait_exit(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._exited.wait()
        except TimeoutError:
            return False
        return True

    def info(self) -> WorkerInfo:
        """A snapshot of this worker, with its resident memory."""
        try:
            rss = psutil.Process(self.pid).memory_info().rss if self._fsm.state.live else 0
        except psutil.Error:
            rss = 0
        return WorkerInfo(
            pid=self.pid,
            state=self.state,
            execs=self.execs,
            created=self.created,
            rss=rss,
            command=" ".join(self.spec.argv),
            reason=self.reason,
            last_error=self.last_error,
        )

    @property
    def _stdout(self) -> asyncio.StreamReader:
        assert self.process.stdout is not None
        return self.process.stdout

    async def _send(self, frame: Frame) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        write_frame(stdin, frame)
        await stdin.drain()

    def _fault(self, exc: BaseException) -> str:
        if isinstance(exc, EOFError):
            code = self.process.returncode
            return "closed its relay" + (f" ({describe_exit(code)})" if code is not None else "")
        return str(exc) or type(exc).__name__

    async def _watch_exit(self) -> None:
        await self.protocol.reaped.wait()
        returncode = self.process.returncode
        kill_group(self.pid)  # its own children never outlive it
        _unreaped.discard(self.pid)
        if self._fsm.state is WorkerState.STOPPING:
            self._fsm.to(WorkerState.STOPPED)
        elif self._fsm.state.live:
            self._fsm.to(WorkerState.ERRORED)
        if self.process.stdin is not None:
            self.process.stdin.close()
        relay = self._tasks[0]
        try:  # the last stderr lines are logged before the exit...
            async with asyncio.timeout(STDERR_DRAIN_TIMEOUT):
                await asyncio.shield(relay)
        except TimeoutError:  # ...unless an escaped grandchild holds stderr open
            relay.cancel()
            if self.protocol.transport is not None:
                self.protocol.transport.close()  # then the pipes never close by themselves
        self._exited.set()
        expected = self._fsm.state is WorkerState.STOPPED
        log.log(
            logging.INFO if expected else logging.WARNING,
            f"worker exited ({describe_exit(returncode)})",
            extra={
                "event": "worker.exited",
                "worker_pid": self.pid,
                "plugin": self.spec.plugin,
                "exit_code": returncode,
                "state": self.state.value,
                "reason": self.reason.value if self.reason else None,
                "execs": self.execs,
            },
        )

    async def _relay_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        extra = {"event": "worker.stderr", "worker_pid": self.pid, "plugin": self.spec.plugin}
        while True:
            try:
                line = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                line = exc.partial
            except asyncio.LimitOverrunError:
                line = await stream.read(STDERR_LINE_LIMIT)  # an over-long line, in pieces
            if not line:
                return
            log.info(line.decode("utf-8", "replace").rstrip("\r\n"), extra=extra)
