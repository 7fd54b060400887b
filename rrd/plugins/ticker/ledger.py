"""The tick ledger: what became of every tick that fell due.

Room: plugins. Imports nothing of rrd. A tick that falls due is exactly one of: in flight,
delivered, failed (by reason) or skipped (by reason), and `due == delivered + failed + skipped +
in_flight` holds at every moment: each tick enters the ledger once, as due, and moves from in
flight to its outcome once. Nothing else writes the counters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

FAILURES = ("soft_error", "timeout", "crashed", "no_worker", "cancelled", "error")
"""Why a tick sent may fail: the worker's ERROR reply, a timeout, a broken worker, no worker
free in time (or the pool stopping), the tick cancelled as rrd stopped at once, a bug."""

SKIPS = ("busy", "late", "expired", "paused", "coalesced")
"""Why a tick due may not be sent, or sent and not run: the previous one still ran (max in
flight), the loop or the host was behind and the tick's moment had passed its grace, no worker
took it within `expires`, its schedule was paused, or it was rolled into a later one (coalesce).
"""


class TickLedger:
    """Counters for one schedule's ticks; `snapshot()` is what `rrd status` shows."""

    __slots__ = ("delivered", "due", "failed", "in_flight", "manual", "sent", "skipped")

    def __init__(self) -> None:
        self.due = 0
        self.delivered = 0
        self.in_flight = 0
        self.failed: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.sent = 0
        """Ticks handed to a worker so far, as the body's `tick` counts them."""
        self.manual = 0
        """Of the ticks due, those an operator asked for (`rrd ticker run`)."""

    @classmethod
    def added(cls, ledgers: Iterable[TickLedger]) -> TickLedger:
        """Several ledgers as one (a plugin's schedules)."""
        total = cls()
        for ledger in ledgers:
            total.due += ledger.due
            total.delivered += ledger.delivered
            total.in_flight += ledger.in_flight
            total.failed.update(ledger.failed)
            total.skipped.update(ledger.skipped)
            total.sent += ledger.sent
            total.manual += ledger.manual
        return total

    def skip(self, reason: str, count: int = 1) -> None:
        """`count` ticks fell due and were not sent."""
        assert reason in SKIPS, reason
        self.due += count
        self.skipped[reason] += count

    def send(self, *, manual: bool = False) -> None:
        """A tick fell due (or an operator asked for one) and is on its way."""
        self.due += 1
        self.in_flight += 1
        self.sent += 1
        self.manual += manual

    def expire(self) -> None:
        """A tick sent found no free worker within its schedule's `expires`: skipped."""
        self.in_flight -= 1
        self.skipped["expired"] += 1

    def deliver(self) -> None:
        """A tick sent got its reply."""
        self.in_flight -= 1
        self.delivered += 1

    def fail(self, reason: str) -> None:
        """A tick sent got no reply, for `reason`."""
        assert reason in FAILURES, reason
        self.in_flight -= 1
        self.failed[reason] += 1

    @property
    def balanced(self) -> bool:
        return self.due == (
            self.delivered + sum(self.failed.values()) + sum(self.skipped.values()) + self.in_flight
        )

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready, the totals first and then the reasons."""
        return {
            "due": self.due,
            "delivered": self.delivered,
            "failed": sum(self.failed.values()),
            "skipped": sum(self.skipped.values()),
            "in_flight": self.in_flight,
            "failed_by": dict(sorted(self.failed.items())),
            "skipped_by": dict(sorted(self.skipped.items())),
            **({"manual": self.manual} if self.manual else {}),
        }

    def summary(self) -> str:
        """The short form for STATUS=: `120 ticks due: 117 delivered, 1 failed, 2 skipped`."""
        failed, skipped = sum(self.failed.values()), sum(self.skipped.values())
        text = f"{self.due} ticks due: {self.delivered} delivered"
        if failed:
            text += f", {failed} failed"
        if skipped:
            text += f", {skipped} skipped"
        if self.in_flight:
            text += f", {self.in_flight} in flight"
        return text
