"""One worker process: spawn, pid handshake, exec, health ping, graceful stop, kill, stderr relay.

Room: worker (beside fsm). Imports proc, fsm, protocol, errors and the stdlib; never pool,
server or anything above. A WorkerProcess lives for exactly one OS process: replacing it is
the pool's job.

The worker's stdout is read all the time, straight from the pipe into a frame decoder, and
every frame must answer the oldest request in flight (the pid handshake, a job, a health
check). Goridge payload frames carry no request id, so behind every payload rrd writes a pid
request, the separator (pipelined: nobody waits for it), and expects its answer right after
the reply: whatever a worker writes between a reply and that answer is a second reply. A frame that
arrives while nothing was asked, a second reply, a bad frame or a reply over the size caps
condemns the worker at once: it is killed, and the callers of the requests in flight get
WorkerCrashed. No caller ever gets a reply that was not for its payload.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rrd.errors import (
    BootError,
    ExecTimeout,
    FrameError,
    FrameTooLarge,
    ScriptOpenError,
    SoftJobError,
    WorkerCrashed,
    WorkerError,
)
from rrd.fsm import ExitReason, IllegalTransition, WorkerFSM, WorkerState
from rrd.proc import ProcessRegistry, describe_exit, find_program, kill_group
from rrd.protocol.control import (
    Payload,
    parse_pid,
    payload_frame,
    pid_request,
    split_payload,
    stop_request,
)
from rrd.protocol.frame import DEFAULT_MAX_PAYLOAD, Decoder, Flag, Frame, Stream, preview

log = logging.getLogger("rrd.worker")
relayed = logging.getLogger("rrd.worker.stderr")
"""A worker's stderr, line by line: output relayed, which never crowds out rrd's own lines."""

PONG = Frame(stream=Stream.PONG).encode()
_DATA = Flag.NONE
_PLAIN = Stream.NONE
_CONTROL = Flag.CONTROL
"""Flag members are singletons: checked by identity on the hot path (an IntFlag `&` is ~0.5 us)."""
STOP = stop_request().encode()
_OWN_PID_REQUEST = pid_request(os.getpid()).encode()
"""Written behind every payload (the separator) and for health checks: encoded once."""

STDERR_LINE_LIMIT = 16 * 1024
"""Longest stderr line relayed as one record; longer ones come in pieces marked `continued`."""
STDERR_LINES_PER_SECOND = 1000
STDERR_BURST = 2000
"""A worker may log this many stderr lines at once and STDERR_LINES_PER_SECOND after that (a
line costs one, plus one per KiB); beyond, lines are dropped and counted, and reading its
stderr pauses for STDERR_PAUSE, so that the flooding worker waits on its own writes and rrd
spends nothing on it."""
STDERR_PAUSE = 0.1
STDERR_DROP_REPORT = 1.0
"""Dropped lines are reported at most once per this many seconds (worker.stderr_dropped)."""
STDERR_DRAIN_TIMEOUT = 1.0
"""How long after a worker's exit its pipes may stay open (a grandchild that escaped the
process group holds them) before rrd stops reading them."""
GARBAGE_PREVIEW = 128
GARBAGE_WAIT = 0.1
"""After a bad frame, what more of the stray output is gathered to show it: at most this many
bytes, arriving within this many seconds."""
PIPE_READ_SIZE = 64 * 1024
"""The most read from a worker's stdout or stderr at once: what a pipe holds by default.
asyncio reads up to 256 KiB, and os.read allocates all of it each time, past malloc's mmap
threshold: ~16 us a read instead of ~1, most of a tick's cost in rrd."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to start one worker of a pool; built by the server."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    plugin: str
    cwd: str | None = None
    allocate_timeout: float = 60.0
    kill_timeout: float = 5.0
    max_frame_size: int = DEFAULT_MAX_PAYLOAD
    max_reply_size: int = 4 * DEFAULT_MAX_PAYLOAD
    user: str | None = None
    group: str | None = None
    extra_groups: tuple[int, ...] | None = None
    """Supplementary groups when run as `user`: the user's, not rrd's."""

    @property
    def command(self) -> str:
        return " ".join(self.argv)


@dataclass(frozen=True)
class WorkerInfo:
    """A snapshot of one worker for `rrd workers` and `informer.Workers`; its memory is read
    apart, off the loop (`rrd.proc.sampled`), by whoever shows it."""

    pid: int
    state: WorkerState
    execs: int
    created: float
    command: str
    reason: ExitReason | None = None
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


class _Exchange:
    """One request in flight on a worker's relay: its future, failed if the worker breaks."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)
            self.future.exception()  # nobody may await it any more: no "never retrieved"


class _PidExchange(_Exchange):
    """The pid handshake, and the health check that repeats it: a CONTROL `{"pid":N}`."""

    __slots__ = ()

    def take(self, worker: WorkerProcess, frame: Frame) -> None:
        if not frame.flags & Flag.CONTROL:
            worker.condemn(
                ExitReason.GARBAGE, f"answered a pid request with a data frame: {_show(frame)}"
            )
            return
        try:
            pid = parse_pid(frame)
        except FrameError as exc:
            worker.condemn(ExitReason.GARBAGE, str(exc))
            return
        worker.answered(self, pid)


class _SyncExchange(_PidExchange):
    """The pid request written behind every payload: after the reply, nothing but its answer
    may come."""

    __slots__ = ()

    def __init__(self) -> None:
        self.future = None  # type: ignore[assignment]  # nobody awaits it: no future to make

    def fail(self, error: BaseException) -> None:
        pass

    def take(self, worker: WorkerProcess, frame: Frame) -> None:
        if frame.flags is _CONTROL and frame.payload == worker._pid_answer:
            worker._pending.popleft()
            return
        if frame.flags & Flag.CONTROL:
            super().take(worker, frame)
        else:
            why = f"sent a second reply to one payload: {_show(frame)}"
            worker.condemn(ExitReason.GARBAGE, why)


class _JobExchange(_Exchange):
    """A payload: its reply is one frame, or frames with the STREAM bit joined into one."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[Payload] = []
        self.size = 0

    def take(self, worker: WorkerProcess, frame: Frame) -> None:
        stream = frame.stream
        plain = stream is _PLAIN and frame.flags is _DATA  # nearly every reply: no flag to read
        if not plain and not self._is_data(worker, frame, stream):
            return
        try:
            payload = split_payload(frame)
        except FrameError as exc:
            worker.condemn(ExitReason.GARBAGE, str(exc))
            return
        self.size += len(frame.payload)
        if self.size > worker.spec.max_reply_size:
            worker.condemn(
                ExitReason.GARBAGE,
                f"reply of over {self.size} bytes exceeds max_reply_size "
                f"({worker.spec.max_reply_size} bytes)",
            )
            return
        if not plain and stream & Stream.STREAM:
            self.chunks.append(payload)
            return
        if self.chunks:
            self.chunks.append(payload)
            payload = Payload(b"".join(c.body for c in self.chunks), self.chunks[0].context)
            self.chunks = []
        worker.answered(self, payload)

    def _is_data(self, worker: WorkerProcess, frame: Frame, stream: Stream) -> bool:
        """A frame with flags: a ping answered, a pong or stop skipped, an ERROR reply, or a
        control frame (garbage) are dealt with here; True for a data frame to go on with."""
        if stream:
            if stream & Stream.PING:
                worker.write(PONG)
                if not frame.payload and not frame.options:
                    return False
            if stream & (Stream.PONG | Stream.STOP):
                return False
        if frame.flags & Flag.ERROR:
            error = SoftJobError(frame.payload.decode("utf-8", "replace"), pid=worker.pid)
            worker.answered(self, error)
            return False
        if frame.flags & Flag.CONTROL:
            why = f"answered a payload with a control frame: {_show(frame)}"
            worker.condemn(ExitReason.GARBAGE, why)
            return False
        return True


def _show(frame: Frame) -> str:
    return preview(frame.encode(), GARBAGE_PREVIEW)


class _Pipes(asyncio.SubprocessProtocol):
    """asyncio's callbacks for one worker's process and pipes, handed to the WorkerProcess."""

    __slots__ = ("worker",)

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.worker._attached(transport)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.worker._on_stdout(data)
        else:
            self.worker._on_stderr(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.worker._on_pipe_closed(fd)

    def process_exited(self) -> None:
        self.worker._on_exit()


class _Stdout(asyncio.Protocol):
    """The worker's stdout pipe straight to its decoder, past asyncio's subprocess layers."""

    def __init__(self, worker: WorkerProcess, layered: asyncio.BaseProtocol) -> None:
        self.data_received = worker._on_stdout  # type: ignore[method-assign]
        self._layered = layered

    def connection_lost(self, exc: Exception | None) -> None:
        self._layered.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return None


class WorkerProcess:
    """One running worker process and its relay. Create with `await WorkerProcess.start(...)`.

    `on_leave` (set by the pool) is called, synchronously, the moment the worker leaves
    service: it goes to STOPPING or ERRORED, whoever decided it.
    """

    def __init__(self, spec: WorkerSpec, registry: ProcessRegistry) -> None:
        self.spec = spec
        self.pid = 0
        self.relay_pid = 0
        self.execs = 0
        self.created = time.time()
        self.started_at = time.monotonic()
        self.ready_at: float | None = None
        self.idle_since = self.started_at
        self.job_started: float | None = None
        self.checked_at = 0.0
        """When the worker last answered a health check (monotonic)."""
        self.max_jobs = 0
        self.expires_at: float | None = None
        """The limits its pool drew for it (0 and None: none): retired after that many jobs,
        or at that moment (monotonic)."""
        self.last_error: str | None = None
        self.last_stderr = ""
        self.returncode: int | None = None
        self.on_leave: Callable[[WorkerProcess], None] | None = None
        self._registry = registry
        self._fsm = WorkerFSM()
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._decoder = Decoder(max_payload=spec.max_frame_size)
        self._pending: deque[_PidExchange | _JobExchange] = deque()
        self._pid_answer = b""
        """The answer to the separator, as the handshake gave it: checked by bytes, not parsed."""
        self._stdout_done = False
        self._garbage: bytearray | None = None
        self._garbage_error: FrameError | None = None
        self._garbage_timer: asyncio.TimerHandle | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._pipes_open = 2
        self._stderr_tail = b""
        self._stderr_tokens = float(STDERR_BURST)
        self._stderr_refilled = self.started_at
        self._stderr_dropped = 0
        self._stderr_reported = 0.0
        self._stderr_paused = False
        self._drop_report: asyncio.TimerHandle | None = None
        self._extra = {"event": "worker.stderr", "worker_pid": 0, "plugin": spec.plugin}
        self._stopping: asyncio.Future[None] | None = None
        self._finished = False
        self._exited = asyncio.Event()

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.pid} {self.state.value}>"

    @property
    def state(self) -> WorkerState:
        return self._fsm.state

    @property
    def reason(self) -> ExitReason | None:
        return self._fsm.reason

    @property
    def exited(self) -> bool:
        """True once the process is reaped and its output relayed."""
        return self._exited.is_set()

    @classmethod
    async def start(
        cls, spec: WorkerSpec, registry: ProcessRegistry, *, server_pid: int | None = None
    ) -> WorkerProcess:
        """Spawn the process and finish the pid handshake within `allocate_timeout`."""
        worker = cls(spec, registry)
        began = time.monotonic()
        try:
            await worker._spawn()  # not under a timeout: cancelling it could orphan the fork
        except (OSError, ValueError, KeyError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise BootError(f"cannot start {spec.argv[0]!r}: {reason}") from None
        remaining = spec.allocate_timeout - (time.monotonic() - began)
        handshake = pid_request(server_pid).encode() if server_pid else _OWN_PID_REQUEST
        exchange = worker._ask(handshake, _PidExchange())
        try:
            async with asyncio.timeout(max(remaining, 0.001)):
                worker.relay_pid = await exchange.future
            worker._pid_answer = b'{"pid":%d}' % worker.relay_pid
        except TimeoutError:
            why = f"no pid handshake within {spec.allocate_timeout:g}s"
            worker.condemn(ExitReason.FAILED_START, why, quiet=True)
            await worker.wait_exited()
            raise BootError(why, pid=worker.pid) from None
        except WorkerError as exc:
            await worker.wait_exited()
            raise BootError(worker.last_error or str(exc), pid=worker.pid) from None
        except BaseException:
            worker.condemn(ExitReason.FAILED_START, "cancelled during its start", quiet=True)
            await asyncio.shield(worker.wait_exited())  # its exit is quick: it was SIGKILLed
            raise
        worker._to(WorkerState.READY)
        worker.ready_at = worker.idle_since = time.monotonic()
        log.info(
            "worker started",
            extra={
                "event": "worker.started",
                "worker_pid": worker.pid,
                "plugin": spec.plugin,
                "duration_ms": round((worker.ready_at - began) * 1000, 1),
            },
        )
        return worker

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        pipe = asyncio.subprocess.PIPE
        spec = self.spec
        try:
            program = find_program(spec.argv[0], spec.env.get("PATH"), spec.cwd or os.getcwd())
        except OSError as exc:
            raise BootError(f"{exc.strerror}: {spec.argv[0]!r}") from None
        with self._registry.spawning():
            await loop.subprocess_exec(
                lambda: _Pipes(self),
                *self._registry.launcher,
                program,
                *spec.argv[1:],
                stdin=pipe,
                stdout=pipe,
                stderr=pipe,
                env=dict(spec.env),
                cwd=spec.cwd,
                start_new_session=True,
                user=spec.user or None,
                group=spec.group or None,
                extra_groups=spec.extra_groups,
            )

    def retune(self, spec: WorkerSpec) -> None:
        """A reload's new limits, for a live worker: its size caps and timeouts from `spec`;
        how it was started (argv, env, user) stays what it was."""
        self.spec = dataclasses.replace(
            self.spec,
            allocate_timeout=spec.allocate_timeout,
            kill_timeout=spec.kill_timeout,
            max_frame_size=spec.max_frame_size,
            max_reply_size=spec.max_reply_size,
        )
        self._decoder.max_payload = spec.max_frame_size

    def reserve(self) -> None:
        """READY -> WORKING: the worker is taken for one job or check, in the same step."""
        self._fsm.to(WorkerState.WORKING)  # it stays in service: no on_leave to call

    def release(self) -> None:
        """WORKING -> READY after a job; a DRAINING or condemned worker stays as it is."""
        if self._fsm.state is WorkerState.WORKING:
            self._fsm.to(WorkerState.READY)
            self.idle_since = time.monotonic()

    def drain(self, reason: ExitReason) -> bool:
        """Mark a busy worker to leave service after its job; False if it is not busy."""
        if self._fsm.state is WorkerState.WORKING:
            self._to(WorkerState.DRAINING, reason)
            return True
        return False

    async def exec(self, payload: Payload, timeout: float | None = None) -> Payload:
        """Send one payload to a reserved worker and return the reply.

        Raises SoftJobError for an ERROR reply (the worker stays usable), ExecTimeout when no
        reply came in `timeout` seconds (the worker is killed, SIGTERM first) and
        WorkerCrashed when the relay broke (the worker is killed).
        """
        state = self._fsm.state
        if state is WorkerState.ERRORED:  # it broke while reserved, before its job was sent
            raise WorkerCrashed(self.last_error or "exited", pid=self.pid)
        if state not in (WorkerState.WORKING, WorkerState.DRAINING):
            raise IllegalTransition(f"exec on a worker that is {state.value}, not reserved")
        self.job_started = time.monotonic()
        exchange = _JobExchange()
        self._pending.append(exchange)
        self._pending.append(_SyncExchange())
        request = payload_frame(payload).encode()
        if len(request) < PIPE_READ_SIZE:
            self.write(request + _OWN_PID_REQUEST)  # one write, one wake-up of the worker
        else:
            self.write(request)  # no copy of a large payload
            self.write(_OWN_PID_REQUEST)
        try:
            if timeout:
                async with asyncio.timeout(timeout):
                    reply: Payload = await exchange.future
            else:
                reply = await exchange.future
        except SoftJobError as exc:
            self.execs += 1
            self.last_error = str(exc)
            raise
        except TimeoutError:
            if not exchange.future.cancelled():
                raise  # not ours: the answer had come
            why = f"no reply within {timeout:g}s"
            self.condemn(ExitReason.EXEC_TTL, why, sigterm_first=True)
            raise ExecTimeout(f"{why}; killed", pid=self.pid) from None
        except asyncio.CancelledError:
            if exchange.future.cancelled():  # the reply is still coming: the relay is out of step
                self.condemn(ExitReason.GARBAGE, "its job was cancelled mid-exec", quiet=True)
            raise
        finally:
            self.job_started = None
        self.execs += 1
        return reply

    async def ping(self, timeout: float) -> None:
        """A health check through the work channel: a pid request answered within `timeout`.

        The worker must be reserved. On silence it is killed (WorkerError).
        """
        exchange = self._ask(_OWN_PID_REQUEST, _PidExchange())
        try:
            async with asyncio.timeout(timeout):
                await exchange.future
        except TimeoutError:
            if not exchange.future.cancelled():
                raise
            why = f"did not answer a health check within {timeout:g}s"
            log.warning(
                f"worker {self.pid} {why}; killing it",
                extra=self._event("worker.unhealthy", reason=ExitReason.UNHEALTHY.value),
            )
            self.condemn(ExitReason.UNHEALTHY, why, quiet=True)
            raise WorkerError(why, pid=self.pid) from None

    def stop(self, reason: ExitReason, *, grace: float) -> asyncio.Future[None]:
        """Stop frame, then SIGTERM after `grace`, then SIGKILL after the spec's kill_timeout.

        The worker leaves service now; await the result for its exit. Idempotent: a second
        caller waits for the first stop. A busy worker is never stopped (that is a bug: drain
        it first); a condemned one is only waited for.
        """
        if self._stopping is None:
            if self._fsm.state in (WorkerState.STOPPED, WorkerState.ERRORED):
                self._stopping = asyncio.ensure_future(self._exited_quietly())
            else:
                self._to(WorkerState.STOPPING, reason)
                self._stopping = asyncio.ensure_future(self._stop_sequence(grace))
        return asyncio.shield(self._stopping)

    async def _exited_quietly(self) -> None:
        await self._exited.wait()

    async def _stop_sequence(self, grace: float) -> None:
        self.write(STOP)
        if await self._exit_within(grace):
            return
        log.warning(
            f"worker {self.pid} did not exit within {grace:g}s of its stop frame; sending SIGTERM",
            extra=self._event("worker.terminate", grace_s=grace),
        )
        kill_group(self.pid, signal.SIGTERM)
        if await self._exit_within(self.spec.kill_timeout):
            return
        log.warning(
            f"worker {self.pid} ignored SIGTERM for {self.spec.kill_timeout:g}s; killing it",
            extra=self._event("worker.killed", reason=self.reason.value if self.reason else None),
        )
        kill_group(self.pid)
        await self._exited.wait()

    def condemn(
        self, reason: ExitReason, why: str, *, sigterm_first: bool = False, quiet: bool = False
    ) -> None:
        """The worker is broken or past a hard limit: out of service and killed, now.

        The request in flight fails with WorkerCrashed(why). With `sigterm_first`, SIGKILL
        follows SIGTERM after the spec's kill_timeout. `quiet` leaves the warning to the caller.
        """
        if self._finished:
            return
        self.last_error = why
        self._fail_pending(why)
        state = self._fsm.state
        if state in (WorkerState.STOPPING, WorkerState.ERRORED):
            if not sigterm_first:
                kill_group(self.pid)  # a stop or a kill already under way: only faster now
            return
        if not quiet and state is not WorkerState.SPAWNING:  # a failed start is the pool's to tell
            log.warning(
                f"worker {self.pid} {why}; killing it",
                extra=self._event("worker.killed", reason=reason.value),
            )
        self._to(WorkerState.ERRORED, reason)
        if self.returncode is not None:
            return
        if sigterm_first:
            kill_group(self.pid, signal.SIGTERM)
            loop = asyncio.get_running_loop()
            self._kill_timer = loop.call_later(self.spec.kill_timeout, kill_group, self.pid)
        else:
            kill_group(self.pid)

    async def wait_exited(self) -> int:
        """Wait until the process is reaped (and its output relayed); return its exit code."""
        await self._exited.wait()
        return self.returncode if self.returncode is not None else -1

    async def _exit_within(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._exited.wait()
        except TimeoutError:
            return False
        return True

    def info(self) -> WorkerInfo:
        """A snapshot of this worker."""
        return WorkerInfo(
            pid=self.pid,
            state=self.state,
            execs=self.execs,
            created=self.created,
            command=self.spec.command,
            reason=self.reason,
            last_error=self.last_error,
        )

    def write(self, data: bytes) -> None:
        """One frame, in one write; nothing once the worker's stdin is gone."""
        stdin = self._stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write(data)

    def answered(self, exchange: _Exchange, result: Any) -> None:
        """The oldest request in flight got its answer."""
        assert self._pending and self._pending[0] is exchange
        self._pending.popleft()
        if exchange.future is None:
            return
        if isinstance(result, BaseException):
            exchange.future.set_exception(result)
        else:
            exchange.future.set_result(result)

    def _ask(self, request: bytes, exchange: _PidExchange | _JobExchange) -> Any:
        """Write an encoded request; `exchange` takes its answer once the requests before it
        have theirs."""
        self._pending.append(exchange)
        self.write(request)
        return exchange

    def _fail_pending(self, why: str) -> None:
        while self._pending:
            self._pending.popleft().fail(WorkerCrashed(why, pid=self.pid))

    def _to(self, state: WorkerState, reason: ExitReason | None = None) -> None:
        was_serving = self._fsm.state.in_service or self._fsm.state is WorkerState.SPAWNING
        self._fsm.to(state, reason)
        leaving = state in (WorkerState.STOPPING, WorkerState.ERRORED)
        if was_serving and leaving and self.on_leave is not None:
            self.on_leave(self)

    def _event(self, event: str, **fields: Any) -> dict[str, Any]:
        return {"event": event, "worker_pid": self.pid, "plugin": self.spec.plugin, **fields}

    # asyncio's callbacks, through _Pipes

    def _attached(self, transport: asyncio.SubprocessTransport) -> None:
        self._transport = transport
        self.pid = transport.get_pid()
        self._extra["worker_pid"] = self.pid
        self._registry.add(self.pid)
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        self._stdin = stdin
        for fd in (1, 2):
            pipe = transport.get_pipe_transport(fd)
            if pipe is not None and hasattr(pipe, "max_size"):  # asyncio's unix read pipe
                pipe.max_size = PIPE_READ_SIZE
        stdout = transport.get_pipe_transport(1)
        if isinstance(stdout, asyncio.ReadTransport):
            stdout.set_protocol(_Stdout(self, stdout.get_protocol()))

    def _on_stdout(self, data: bytes) -> None:
        if self._stdout_done:
            return
        if self._garbage is not None:
            self._garbage += data[: GARBAGE_PREVIEW - len(self._garbage)]
            if len(self._garbage) >= GARBAGE_PREVIEW:
                self._garbage_seen()
            return
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:
            for frame in exc.frames:
                assert isinstance(frame, Frame)
                self._on_frame(frame)
            if not self._stdout_done:
                self._garbage_arrived(exc)
            return
        for frame in frames:
            self._on_frame(frame)

    def _on_frame(self, frame: Frame) -> None:
        if self._stdout_done:
            return
        if not self._pending:
            if self._fsm.state is WorkerState.STOPPING:
                return  # a worker on its way out may still flush something: no matter now
            self.condemn(ExitReason.GARBAGE, f"wrote to stdout out of turn: {_show(frame)}")
            self._stdout_done = True
            return
        self._pending[0].take(self, frame)

    def _garbage_arrived(self, error: FrameError) -> None:
        """Gather a little more of the stray output, so the person sees what it says."""
        self._garbage_error = error
        self._garbage = bytearray(error.rest[:GARBAGE_PREVIEW])
        if len(self._garbage) >= GARBAGE_PREVIEW:
            self._garbage_seen()
        else:
            loop = asyncio.get_running_loop()
            self._garbage_timer = loop.call_later(GARBAGE_WAIT, self._garbage_seen)

    def _garbage_seen(self) -> None:
        if self._garbage is None or self._garbage_error is None:
            return
        if self._garbage_timer is not None:
            self._garbage_timer.cancel()
        seen, error = bytes(self._garbage), self._garbage_error
        self._garbage = None
        self._stdout_done = True
        if isinstance(error, ScriptOpenError):
            why = seen.decode("utf-8", "replace").strip().splitlines()[0]
        elif isinstance(error, FrameTooLarge):
            why = f"{error} (max_frame_size)"
        else:
            why = f"wrote garbage to stdout: {preview(seen, GARBAGE_PREVIEW)}"
        self.condemn(ExitReason.GARBAGE, why)

    def _on_stderr(self, data: bytes) -> None:
        if self._stderr_tail:
            data = self._stderr_tail + data
        lines = data.split(b"\n")
        tail = lines.pop()
        cut = len(tail) - len(tail) % STDERR_LINE_LIMIT  # whole pieces of an unfinished line
        self._stderr_tail = tail[cut:]
        if cut:
            lines.append(tail[:cut])
        kept = self._within_budget(lines)
        for index in range(kept):
            self._relay_line(lines[index], ends=not (cut and index == len(lines) - 1))
        if self._stderr_dropped and self._drop_report is None:
            due = self._stderr_reported + STDERR_DROP_REPORT - time.monotonic()
            loop = asyncio.get_running_loop()
            self._drop_report = loop.call_later(max(0.0, due), self._report_dropped)

    def _within_budget(self, lines: list[bytes]) -> int:
        """How many of `lines` may be logged now (a token bucket); the rest are counted as
        dropped, and reading pauses for a moment."""
        now = time.monotonic()
        tokens = min(
            STDERR_BURST,
            self._stderr_tokens + (now - self._stderr_refilled) * STDERR_LINES_PER_SECOND,
        )
        self._stderr_refilled = now
        kept = 0
        for line in lines:
            cost = 1 + len(line) // 1024
            if cost > tokens:
                break
            tokens -= cost
            kept += 1
        self._stderr_tokens = tokens
        if kept < len(lines):
            self._stderr_dropped += len(lines) - kept
            self._pause_stderr()
        return kept

    def _pause_stderr(self) -> None:
        if self._stderr_paused or self._transport is None:
            return
        pipe = self._transport.get_pipe_transport(2)
        if not isinstance(pipe, asyncio.ReadTransport) or pipe.is_closing():
            return
        pipe.pause_reading()
        self._stderr_paused = True
        asyncio.get_running_loop().call_later(STDERR_PAUSE, self._resume_stderr, pipe)

    def _resume_stderr(self, pipe: asyncio.ReadTransport) -> None:
        self._stderr_paused = False
        if not pipe.is_closing():
            pipe.resume_reading()

    def _relay_line(self, line: bytes, *, ends: bool = True) -> None:
        """Log one stderr line, in pieces of STDERR_LINE_LIMIT marked `continued` but the last."""
        last = len(line) - 1
        for start in range(0, max(len(line), 1), STDERR_LINE_LIMIT):
            text = line[start : start + STDERR_LINE_LIMIT].decode("utf-8", "replace")
            if ends and start + STDERR_LINE_LIMIT > last:
                text = text.rstrip("\r")
                self.last_stderr = text[:200]
                relayed.info(text, extra=self._extra)
            else:
                relayed.info(text, extra={**self._extra, "continued": True})

    def _report_dropped(self) -> None:
        if self._drop_report is not None:
            self._drop_report.cancel()
            self._drop_report = None
        dropped, self._stderr_dropped = self._stderr_dropped, 0
        if not dropped:
            return
        self._stderr_reported = time.monotonic()
        log.warning(
            f"worker {self.pid} wrote too many stderr lines; dropped {dropped}",
            extra=self._event("worker.stderr_dropped", count=dropped),
        )

    def _on_pipe_closed(self, fd: int) -> None:
        if fd == 0:
            return
        self._pipes_open -= 1
        if fd == 1:
            if self._garbage is not None:
                self._garbage_seen()
            if self.returncode is None and not self._stdout_done:
                self._stdout_done = True  # it is exiting, most likely: its exit tells why
                loop = asyncio.get_running_loop()
                loop.call_later(GARBAGE_WAIT, self._stdout_closed_alive)
        if self._pipes_open == 0 and self.returncode is not None:
            self._finish()

    def _stdout_closed_alive(self) -> None:
        if self.returncode is None:
            self.condemn(ExitReason.CRASHED, "closed its stdout but kept running")

    def _on_exit(self) -> None:
        assert self._transport is not None
        self.returncode = self._transport.get_returncode()
        self._registry.reaped(self.pid)  # its own children never outlive it
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        if self._stdin is not None:
            self._stdin.close()
        if self._pipes_open == 0:
            self._finish()
        else:
            asyncio.get_running_loop().call_later(STDERR_DRAIN_TIMEOUT, self._finish)

    def _finish(self) -> None:
        """The process is reaped and its pipes read (or given up on): the worker is over."""
        if self._finished:
            return
        if self._garbage is not None:
            self._garbage_seen()
        code = self.returncode
        if self._pending:
            if self._fsm.state is not WorkerState.SPAWNING:
                why = f"closed its relay ({describe_exit(code)})"
            else:
                why = f"exited before its pid handshake ({describe_exit(code)})"
                if self.last_stderr:
                    why += f"; its last stderr line: {self.last_stderr}"
            if any(not isinstance(e, _SyncExchange) for e in self._pending):
                self.last_error = why
            self._fail_pending(why)
        if self._fsm.state is WorkerState.STOPPING:
            self._fsm.to(WorkerState.STOPPED)
        elif self._fsm.state is not WorkerState.ERRORED:
            self._to(WorkerState.ERRORED, ExitReason.CRASHED)
        self._finished = True
        if self._stderr_tail:
            self._relay_line(self._stderr_tail)
            self._stderr_tail = b""
        self._report_dropped()
        if self._transport is not None:
            self._transport.close()
        self._exited.set()
        expected = self._fsm.state is WorkerState.STOPPED
        log.log(
            logging.INFO if expected else logging.WARNING,
            f"worker {self.pid} exited ({describe_exit(code)})",
            extra=self._event(
                "worker.exited",
                exit_code=code,
                state=self.state.value,
                reason=self.reason.value if self.reason else None,
                execs=self.execs,
            ),
        )
