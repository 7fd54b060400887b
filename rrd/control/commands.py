"""What the daemon can be asked to do: commands, and requests carrying them on its queue.

Room: control. Imports nothing of rrd. Signals, control calls, HTTP and file changes all
become a Request; the daemon runs them one at a time and answers each through its future.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Command(Enum):
    """Everything the daemon can be asked to do, whichever way the request came."""

    STOP = "stop"
    RESET = "reset"
    RELOAD = "reload"
    SCALE = "scale"
    REOPEN_LOGS = "reopen_logs"


@dataclass(eq=False)
class Request:
    """A command with its arguments, and a future for whoever waits for its outcome."""

    command: Command
    args: Mapping[str, Any] = field(default_factory=dict)
    reply: asyncio.Future[Any] | None = None
    folded: list[Request] = field(default_factory=list)
    """Requests coalesced into this one: they get its outcome."""


def same_outcome(a: Request, b: Request) -> bool:
    """Requests that one run can answer both: two reloads, or two resets of the same plugins."""
    if a.command is not b.command or a.command not in (Command.RELOAD, Command.RESET):
        return False
    return a.command is Command.RELOAD or a.args.get("plugins") == b.args.get("plugins")
