"""The config schema: frozen dataclasses whose fields carry their help text, and their shapes.

Room: config. Imports only `rrd.errors` and the standard library; knows no plugin by name.

A section is a frozen dataclass whose fields are declared with `setting()`. The loader and
`rrd config docs` read the fields' type annotations; `shape_of` reduces an annotation to one
of the few shapes the loader knows:

| annotation | shape | written as |
| --- | --- | --- |
| `bool`, `int`, `float`, `str` | the same | YAML scalars |
| `Duration`, `Size` | duration, size | `"1m30s"`; `512`, `"64MiB"` |
| `Literal["a", "b"]` | choice | one of the strings |
| `tuple[str, ...]` | words | a string split like a shell would (no shell runs), or a list |
| `dict[str, str]` | env map | a mapping; keys upper-cased, values scalars turned to strings |
| a frozen dataclass | section | a mapping |
| `dict[str, Section]` | section map | a mapping of names (as written) to sections |
| `X | None` | optional X | absent or null means None |

RoadRunner's own keys that rrd accepts without acting on them are declared like any other,
with `setting(..., ignored="why")`: their values are still checked against their type, and the
loader adds a warning to `Config.warnings` for each one the user wrote (never for a default).
RoadRunner's spellings of a choice are `setting(..., aliases={"raw": "production"})`: read
as the choice they name, with a warning.

A check across fields goes in the section's `__post_init__`: a ValueError is reported at the
section, a `ConfigError(message, key="field")` at that field's line.
"""

# setting() returns a dataclasses.field, as RUF009 cannot know; every default is copied.

from __future__ import annotations

import copy
import dataclasses
import functools
import grp
import ipaddress
import pwd
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from rrd.config.units import DURATION, SIZE, Duration, Size, Unit, format_size
from rrd.errors import ConfigError

__all__ = [
    "REQUIRED",
    "Config",
    "FieldSpec",
    "FileLoggerOptions",
    "HealthConfig",
    "LimitsConfig",
    "LogChannelConfig",
    "LogsConfig",
    "MetricsConfig",
    "OnInitConfig",
    "PoolConfig",
    "RestartConfig",
    "RpcConfig",
    "ServerConfig",
    "Shape",
    "StatusConfig",
    "field_specs",
    "setting",
    "shape_of",
]

T = TypeVar("T")

REQUIRED: Any = dataclasses.MISSING
"""Pass as the default of `setting()` for a key the user must write."""


def setting(
    default: T,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: Sequence[str] | None = None,
    nonempty: bool = False,
    check: Callable[[Any], None] | None = None,
    ignored: str | None = None,
    aliases: Mapping[str, str] | None = None,
) -> T:
    """Declare a config field with its default, help text and limits (a `dataclasses.field`).

    `ignored="why"` marks a RoadRunner key that rrd reads (and type-checks) but does not act
    on; the loader warns `KEY: RoadRunner setting; rrd accepts it and ignores it (why)` when
    the key is written. `aliases` maps RoadRunner's other words for a choice to the choice
    they are read as; the loader warns `KEY: RoadRunner value "raw"; rrd reads it as "..."`.
    """
    metadata: dict[str, Any] = {"help": help}
    if minimum is not None:
        metadata["minimum"] = minimum
    if maximum is not None:
        metadata["maximum"] = maximum
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if nonempty:
        metadata["nonempty"] = True
    if check is not None:
        # `check(value)` raises ValueError with a message for the user.
        metadata["check"] = check
    if ignored is not None:
        metadata["ignored"] = ignored
    if aliases is not None:
        metadata["aliases"] = dict(aliases)
    if default is REQUIRED:
        result: T = field(metadata=metadata)
        return result
    if isinstance(default, (dict, list, set)) or dataclasses.is_dataclass(default):
        # A dict inside a frozen dataclass is still mutable: every instance gets its own copy.
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Shape:
    """What the loader expects for one field, reduced from its type annotation."""

    kind: Literal[
        "bool",
        "int",
        "float",
        "str",
        "duration",
        "size",
        "choice",
        "words",
        "envmap",
        "section",
        "sectionmap",
    ]
    optional: bool = False
    choices: tuple[str, ...] = ()
    cls: type | None = None
    aliases: tuple[tuple[str, str], ...] = ()  # (written, choice) pairs for a choice


@dataclass(frozen=True)
class FieldSpec:
    """One field of a section: its shape, default and the metadata given to `setting()`."""

    name: str
    shape: Shape
    default: Any  # dataclasses.MISSING when the key is required
    help: str
    minimum: float | None = None
    maximum: float | None = None
    nonempty: bool = False
    check: Callable[[Any], None] | None = None
    ignored: str | None = None  # why rrd accepts the key and does nothing with it

    @property
    def required(self) -> bool:
        """True when the user must write this key."""
        return self.default is dataclasses.MISSING


_SCALARS: Final[dict[object, Literal["bool", "int", "float", "str"]]] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
}


def shape_of(annotation: Any) -> Shape:
    """Reduce a field's type annotation to a Shape; TypeError for what the loader cannot read."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return dataclasses.replace(shape_of(rest[0]), optional=True)
    elif origin is Annotated:
        units = [a for a in args[1:] if isinstance(a, Unit)]
        if units == [DURATION] and args[0] is float:
            return Shape("duration")
        if units == [SIZE] and args[0] is int:
            return Shape("size")
        if not units:
            return shape_of(args[0])
    elif origin is Literal:
        if args and all(isinstance(a, str) for a in args):
            return Shape("choice", choices=tuple(args))
    elif origin is tuple:
        if args == (str, ...):
            return Shape("words")
    elif origin is dict:
        if args == (str, str):
            return Shape("envmap")
        if len(args) == 2 and args[0] is str and _is_section(args[1]):
            return Shape("sectionmap", cls=args[1])
    elif annotation in _SCALARS:
        return Shape(_SCALARS[annotation])
    elif _is_section(annotation):
        return Shape("section", cls=annotation)
    raise TypeError(f"the config loader cannot read a field of type {annotation!r}")


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


@functools.cache
def field_specs(cls: type) -> dict[str, FieldSpec]:
    """The fields of a section class, in declaration order."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"a config section must be a dataclass, not {cls!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    specs: dict[str, FieldSpec] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        try:
            shape = shape_of(hints[f.name])
        except TypeError as err:
            raise TypeError(f"{cls.__qualname__}.{f.name}: {err}") from None
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        meta = f.metadata
        where = f"{cls.__qualname__}.{f.name}"
        choices = meta.get("choices")
        if choices is not None:
            if shape.kind != "str":
                raise TypeError(f"{where}: choices= needs a str field")
            shape = dataclasses.replace(shape, kind="choice", choices=tuple(choices))
        aliases = meta.get("aliases")
        if aliases is not None:
            shape = dataclasses.replace(shape, aliases=_aliases(where, shape, aliases))
        ignored = meta.get("ignored")
        if ignored is not None and (not ignored or default is dataclasses.MISSING):
            raise TypeError(f"{where}: ignored= needs a reason and a default")
        specs[f.name] = FieldSpec(
            name=f.name,
            shape=shape,
            default=default,
            help=meta.get("help", ""),
            minimum=meta.get("minimum"),
            maximum=meta.get("maximum"),
            nonempty=meta.get("nonempty", False),
            check=meta.get("check"),
            ignored=ignored,
        )
    return specs


def _aliases(where: str, shape: Shape, aliases: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Check `aliases=`: other spellings of a choice field, each naming one of its choices."""
    if shape.kind != "choice":
        raise TypeError(f"{where}: aliases= needs a choice field")
    known = {c.lower() for c in shape.choices}
    for written, meant in aliases.items():
        if written.lower() in known or meant not in shape.choices:
            raise TypeError(f"{where}: alias {written!r} must be a new word for one of the choices")
    return tuple(aliases.items())


_LISTEN = re.compile(r"(?:tcp://[^\s]*:[0-9]+|unix://[^\s]+)")


def _check_listen(address: str) -> None:
    if not _LISTEN.fullmatch(address):
        raise ValueError(f'expected "tcp://HOST:PORT" or "unix:///path/to/socket", got "{address}"')


_ZERO_IS_DEFAULT = " 0 means 60s, as in RoadRunner."


@dataclass(frozen=True)
class LimitsConfig:
    """When a pool retires its workers: RoadRunner's `pool.supervisor` block.

    0 turns a limit off. Named for what it holds; the key keeps RoadRunner's name.
    """

    watch_tick: Duration = setting(
        5.0,
        "How often ttl, idle_ttl and max_worker_memory are checked.",
        minimum=0.1,
    )
    ttl: Duration = setting(
        0.0,
        "Retire a worker this long after it started, plus 0-15% drawn for each worker so "
        "that a pool never retires all at once; a busy one after its job, its successor "
        "ready first.",
        minimum=0,
    )
    idle_ttl: Duration = setting(
        0.0,
        "Retire a worker that has had no job for this long (one that never had a job counts "
        "from its start).",
        minimum=0,
    )
    exec_ttl: Duration = setting(
        0.0,
        "Longest one job may run: at that moment the caller gets a timeout and the worker is "
        "killed, SIGTERM first and SIGKILL after kill_timeout.",
        minimum=0,
    )
    max_worker_memory: int = setting(
        0,
        "Retire a worker whose resident memory (RSS), with that of every process it started, "
        "exceeds this many MiB; a busy one after its job.",
        minimum=0,
    )


@dataclass(frozen=True)
class HealthConfig:
    """Health checks through the work channel: a pid request to an idle worker."""

    interval: Duration = setting(
        10.0,
        "A worker idle this long is sent a pid request, and again every interval while it "
        "stays idle; 0 turns health checks off.",
        minimum=0,
    )
    timeout: Duration = setting(
        2.0,
        "How long a worker has to answer; silent, it is killed and replaced (worker.unhealthy).",
        minimum=0.001,
    )


@dataclass(frozen=True)
class RestartConfig:
    """How a pool restarts workers that fail to start."""

    min_uptime: Duration = setting(
        1.0,
        "How long a worker must live after its start, unless it served a payload sooner, for "
        "its start to count as good; an earlier exit is a failed start, and respawns after "
        "failed starts back off.",
        minimum=0,
    )
    initial_delay: Duration = setting(
        0.1, "The wait before the first respawn after a failed start.", minimum=0
    )
    max_delay: Duration = setting(
        30.0,
        "The longest wait between respawns; a pool that is fatal retries at this pace.",
        minimum=0,
    )
    multiplier: float = setting(
        2.0, "Each consecutive failed start multiplies the wait by this.", minimum=1
    )
    jitter: float = setting(
        0.2,
        "Each wait is spread by up to this fraction either way, so that hosts do not restart "
        "in step.",
        minimum=0,
        maximum=1,
    )
    max_retries: int = setting(
        10,
        "After this many consecutive failed starts (of any worker of the pool) the pool is "
        "fatal: at boot rrd exits 69; later it keeps retrying every max_delay and says so.",
        minimum=1,
    )

    def __post_init__(self) -> None:
        if self.max_delay < self.initial_delay:
            raise ConfigError(
                f"must be at least initial_delay ({self.initial_delay:g}s)", key="max_delay"
            )


@dataclass(frozen=True)
class PoolConfig:
    """A plugin's worker pool, as RoadRunner's `pool` block.

    RoadRunner reads 0 for the allocate, destroy and reset timeouts as its default of 60s;
    so does rrd, so that a RoadRunner config means the same here.
    """

    num_workers: int = setting(0, "Number of workers; 0 means one per CPU.", minimum=0)
    max_workers: int = setting(
        256,
        "The most workers the pool may have: num_workers (0 means one per CPU, up to this) "
        "and `rrd scale` are bounded by it, so that a typo cannot fork thousands of processes.",
        minimum=1,
    )
    spares: int = setting(
        0,
        "Workers kept started and ready outside the rotation (rrd's own): when a worker dies "
        "or retires, a spare takes its slot at once, and another spare starts behind it.",
        minimum=0,
    )
    max_jobs: int = setting(
        0,
        "Retire a worker after this many jobs; 0 means never.",
        minimum=0,
    )
    max_queue_size: int = setting(
        0,
        "Most jobs that may wait for a free worker; 0 means no limit.",
        minimum=0,
    )
    allocate_timeout: Duration = setting(
        60.0,
        "Longest wait for a worker: spawn plus pid handshake, or a free worker for a job."
        + _ZERO_IS_DEFAULT,
        minimum=0,
    )
    destroy_timeout: Duration = setting(
        60.0,
        "Grace period for a worker to exit after its stop frame before it gets SIGTERM; also "
        "how long a pool's stop waits for jobs in flight." + _ZERO_IS_DEFAULT,
        minimum=0,
    )
    reset_timeout: Duration = setting(
        60.0,
        "Longest a reset (replace every worker) may take." + _ZERO_IS_DEFAULT,
        minimum=0,
    )
    kill_timeout: Duration = setting(
        5.0,
        "After SIGTERM, how long a worker has to exit before SIGKILL: when a stop outlives "
        "destroy_timeout, and when a job outlives its exec timeout.",
        minimum=0,
    )
    max_frame_size: Size = setting(
        64 * 2**20,
        "The largest frame a worker may send; a worker whose frame header announces more is "
        "killed and replaced.",
        minimum=2**10,
    )
    max_reply_size: Size = setting(
        256 * 2**20,
        "The largest whole reply (a streamed reply's frames joined); a worker whose reply "
        "grows past it is killed and replaced. At least max_frame_size.",
        minimum=2**10,
    )
    command: tuple[str, ...] = setting(
        (),
        "The workers' command, when it differs from server.command; empty uses server.command.",
        nonempty=True,
    )
    env: dict[str, str] = setting(
        {},
        "Environment added for this pool's workers, after server.env.",
    )
    debug: bool = setting(False, "Start a fresh worker for every job (slow; for development).")
    supervisor: LimitsConfig = setting(LimitsConfig(), "Worker retirement limits.")
    health: HealthConfig = setting(HealthConfig(), "Health checks of idle workers.")
    restart: RestartConfig = setting(RestartConfig(), "Restarts after failed starts.")
    stream_timeout: Duration = setting(
        60.0,
        "RoadRunner's limit on cancelling a streamed reply.",
        minimum=0,
        ignored="rrd joins a streamed reply and never cancels one",
    )

    def __post_init__(self) -> None:
        for name in ("allocate_timeout", "destroy_timeout", "reset_timeout"):
            if getattr(self, name) == 0:  # a frozen dataclass is set this way
                object.__setattr__(self, name, 60.0)
        if self.num_workers > self.max_workers:
            raise ConfigError(
                f"must be at most max_workers ({self.max_workers}), got {self.num_workers}",
                key="num_workers",
            )
        if self.spares > self.max_workers:
            raise ConfigError(
                f"must be at most max_workers ({self.max_workers}), got {self.spares}",
                key="spares",
            )
        if self.max_reply_size < self.max_frame_size:
            raise ConfigError(
                f"must be at least max_frame_size ({format_size(self.max_frame_size)}), "
                f"got {format_size(self.max_reply_size)}",
                key="max_reply_size",
            )


@dataclass(frozen=True)
class OnInitConfig:
    """A command run once before any worker starts."""

    command: tuple[str, ...] = setting(
        REQUIRED,
        "The command: a string split into words (no shell), or a list.",
        nonempty=True,
    )
    exec_timeout: Duration = setting(
        60.0,
        "Kill the command when it runs longer than this.",
        minimum=0,
    )
    exit_on_error: bool = setting(
        False,
        "Stop rrd when the command fails; otherwise log the failure and go on.",
    )
    env: dict[str, str] = setting({}, "Environment added for the command.")
    user: str = setting(
        "", "RoadRunner runs the command as this user.", ignored="on_init runs as rrd's user"
    )


@dataclass(frozen=True)
class ServerConfig:
    """How workers are started: RoadRunner's `server` section."""

    command: tuple[str, ...] = setting(
        (),
        "The worker program and its arguments: a string split into words like a shell "
        "would (no shell runs), or a list.",
        nonempty=True,
    )
    env: dict[str, str] = setting(
        {},
        "Environment added for every worker; keys are upper-cased.",
    )
    relay: str = setting(
        "pipes",
        "How rrd talks to workers: over their stdin and stdout.",
        choices=("pipes",),
    )
    relay_timeout: Duration = setting(
        60.0,
        "RoadRunner's limit on a worker connecting to a socket relay.",
        minimum=0,
        ignored="pipes need no connect timeout",
    )
    user: str = setting("", "Run workers as this user (rrd must run as root); empty keeps rrd's.")
    group: str = setting("", "Run workers with this group; empty keeps rrd's.")
    on_init: OnInitConfig | None = setting(None, "A command run once before any worker starts.")


@dataclass(frozen=True)
class FileLoggerOptions:
    """RoadRunner's rotating log file (lumberjack)."""

    log_output: str = setting("", "The file written.")
    max_size: int = setting(0, "MB a file may grow to before it is rotated.", minimum=0)
    max_age: int = setting(0, "Days a rotated file is kept.", minimum=0)
    max_backups: int = setting(0, "Rotated files kept.", minimum=0)
    compress: bool = setting(False, "Gzip rotated files.")


@dataclass(frozen=True)
class LogChannelConfig:
    """One plugin's log settings in RoadRunner's `logs.channels`."""

    mode: Literal["production", "development", "raw", "off", "none"] | None = setting(
        None, "The plugin's log mode."
    )
    level: Literal["debug", "info", "warn", "error", "dpanic", "panic", "fatal"] | None = setting(
        None, "The plugin's log level."
    )
    encoding: Literal["console", "json"] | None = setting(None, "The plugin's log encoding.")
    output: tuple[str, ...] | None = setting(None, "Where the plugin's log goes.")
    err_output: tuple[str, ...] | None = setting(None, "Where the logger's own errors go.")
    line_ending: str | None = setting(None, "The end of each log line.")
    file_logger_options: FileLoggerOptions | None = setting(None, "The plugin's rotating log file.")


@dataclass(frozen=True)
class LogsConfig:
    """rrd's own log."""

    mode: Literal["production", "development", "off"] = setting(
        "production",
        "production: one JSON object per line; development: the same for humans; off: errors "
        "only, as JSON, whatever logs.level says (RoadRunner's off writes nothing at all; rrd "
        "still says why it fails).",
        aliases={"raw": "production", "none": "off"},
    )
    level: Literal["debug", "info", "warn", "warning", "error"] = setting(
        "info",
        "The least severe level written (warn and warning are the same).",
        aliases={"panic": "error"},
    )
    output: str = setting(
        "stderr",
        "Where the log goes: stderr, stdout, or a file path (appended to).",
        nonempty=True,
    )
    journal: Literal["auto", "on", "off"] = setting(
        "auto",
        "Send each record to systemd's journal as an entry with PRIORITY and fields (EVENT, "
        "PLUGIN, WORKER_PID...): auto when logs.output is the stream systemd gave to the "
        "journal (JOURNAL_STREAM), on whenever the journal can be reached (else as auto, with "
        "a warning), off never. A file output never goes to the journal.",
    )
    encoding: Literal["console", "json"] | None = setting(
        None,
        "RoadRunner's log encoding.",
        ignored="logs.mode chooses JSON or human output",
    )
    err_output: tuple[str, ...] | None = setting(
        None,
        "Where RoadRunner's logger writes its own errors.",
        ignored="rrd's log has one output, logs.output",
    )
    line_ending: str | None = setting(
        None,
        "RoadRunner's end of a log line.",
        ignored="every log line ends with a newline",
    )
    file_logger_options: FileLoggerOptions | None = setting(
        None,
        "RoadRunner's rotating log file.",
        ignored="logs.output appends to a file; rotate it outside rrd",
    )
    channels: dict[str, LogChannelConfig] = setting(
        {},
        "RoadRunner's log settings per plugin, by plugin name.",
        ignored="every plugin writes to rrd's one log, as logs.* says",
    )

    def __post_init__(self) -> None:
        if self.mode == "off":  # errors only; a frozen dataclass is set this way
            object.__setattr__(self, "level", "error")


def _check_ids(kind: Literal["user", "group"]) -> Callable[[tuple[str, ...]], None]:
    """A check= that each word is a number or the name of an existing user (group)."""

    def check(names: tuple[str, ...]) -> None:
        for name in names:
            if name.isascii() and name.isdigit():
                continue
            try:
                pwd.getpwnam(name) if kind == "user" else grp.getgrnam(name)
            except KeyError:
                raise ValueError(f"no {kind} named {name!r}; give a name or a number") from None

    return check


def is_loopback(host: str) -> bool:
    """A listen host that only this machine can reach: localhost or a loopback literal."""
    if host.lower() in ("", "localhost"):  # rrd reads an empty host as 127.0.0.1
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RpcConfig:
    """Where the control socket listens (rrd status, rrd reload, PHP's RPC client), as RR_RPC,
    and who may use it.

    A unix socket serves rrd's own uid and root, and the users and groups allowed here (it is
    then mode 0666: the kernel's peer credentials decide). TCP has no credentials: it is
    loopback only and read-only unless allow_remote and tcp_write say otherwise.
    """

    listen: str = setting(
        "tcp://127.0.0.1:6001",
        "Address: tcp://HOST:PORT or unix:///path/to/socket; workers get it as RR_RPC.",
        check=_check_listen,
    )
    allow_uids: tuple[str, ...] = setting(
        (),
        "Other users (names or uids) the unix control socket serves, besides rrd's own user "
        "and root.",
        check=_check_ids("user"),
    )
    allow_groups: tuple[str, ...] = setting(
        (),
        "Groups (names or gids) whose members the unix control socket serves, by primary or "
        "supplementary group.",
        check=_check_ids("group"),
    )
    allow_remote: bool = setting(
        False,
        "Let a tcp:// listen address be other than loopback (warned at start): anyone who "
        "reaches it may call rrd.",
    )
    tcp_write: bool = setting(
        False,
        "Serve the calls that change rrd (reset, scale, reload, stop) over TCP too; else TCP "
        "serves only informer.List, informer.Workers, resetter.List, rrd.Status, rrd.Workers and "
        "the plugins' own List calls.",
    )

    def __post_init__(self) -> None:
        if self.listen.startswith("tcp://") and not self.allow_remote:
            host = self.listen.removeprefix("tcp://").rpartition(":")[0].strip("[]")
            if not is_loopback(host):
                raise ConfigError(
                    f"{self.listen} is not a loopback address: any host that reaches it could "
                    "call rrd; set rpc.allow_remote: true if that is meant",
                    key="listen",
                )


def _check_http_address(value: str) -> None:
    """HOST:PORT as RoadRunner writes a listen address: `127.0.0.1:2112`, `:2112`, `[::1]:2112`."""
    host, colon, port = value.rpartition(":")
    if not colon or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:2114, got {value!r}")
    if host.startswith("[") != host.endswith("]") or any(c in host for c in "/ "):
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:2114, got {value!r}")


@dataclass(frozen=True)
class StatusConfig:
    """RoadRunner's status plugin: `GET /health` and `GET /ready` for probes (Kubernetes,
    load balancers, systemd's ExecStartPost), answered from the pools' state.

    `/health?plugin=NAME` (repeatable; none = every pool) answers 200 when each pool has a
    worker ready or working; `/ready` only when each has an idle worker, so it fails under
    saturation and, during a graceful stop, at once. The body is RoadRunner's JSON list of
    `{"plugin_name", "error_message", "status_code"}`.
    """

    address: str = setting(
        REQUIRED,
        "Where to listen: HOST:PORT (`:2114` for every interface).",
        check=_check_http_address,
    )
    unavailable_status_code: int = setting(
        503, "The HTTP status of a failed probe.", minimum=400, maximum=599
    )
    check_timeout: int = setting(
        60,
        "RoadRunner's limit, in seconds, on asking a plugin for its state.",
        minimum=0,
        ignored="rrd reads the pools' state in memory and answers at once",
    )


@dataclass(frozen=True)
class MetricsConfig:
    """RoadRunner's metrics plugin: `GET /metrics` in Prometheus' text format, with
    RoadRunner's per-pool names (`rr_<plugin>_workers_ready`...) and rrd's own (`rrd_*`:
    restarts by reason, every tick's outcome, exec duration and tick lateness histograms)."""

    address: str = setting(
        "127.0.0.1:2112",
        "Where to listen: HOST:PORT (`:2112` for every interface).",
        check=_check_http_address,
    )


@dataclass(frozen=True)
class Config:
    """A whole config file, read and checked.

    `lines` maps each dotted key written in the file (`server.command`, `server.env.PATH`,
    `server.command[1]`) to the line it was written on; `overridden` holds the keys an `-o`
    set. Both serve `error()`, so that a fault found after loading still names its line.
    """

    version: str
    source: Path
    workdir: Path
    server: ServerConfig = field(default_factory=ServerConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    rpc: RpcConfig | None = None
    status: StatusConfig | None = None
    metrics: MetricsConfig | None = None
    sections: Mapping[str, Any] = field(default_factory=dict)
    dotenv: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    overridden: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError at `key`: on `-o` if an override set it, else on the key's line, or
        the nearest written ancestor's (the line of `server:` for an unwritten command)."""
        if key in self.overridden:
            return ConfigError(message, path="-o", key=key)
        for written in _ancestry(key):
            if written in self.lines:
                return ConfigError(
                    message, path=str(self.source), line=self.lines[written], key=key
                )
        return ConfigError(message, path=str(self.source), key=key)


def _ancestry(key: str) -> list[str]:
    """`a.b[1].c`, `a.b[1]`, `a.b`, `a`: the key and its ancestors, nearest first."""
    keys = [key]
    while True:
        cut = max(key.rfind("."), key.rfind("["))
        if cut <= 0:
            return keys
        key = key[:cut]
        keys.append(key)
