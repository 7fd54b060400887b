"""The checks of the systemd stage: rrd.service under a real systemd, driven from the host.

Run by tests/systemd/run.sh once the container has booted, with the package's path in it: the
checks install it with apt (P1) and end by removing, purging and installing it again (P4-P6);
the numbered checks between run against the packaged unit, with a drop-in of quicker timings and
/etc/rrd/rr.yaml edited to the checks' config (P2). Stdlib only, run by the host's Python.
rrd's log reaches the journal as entries with fields (EVENT, PLUGIN, WORKER_PID...), which the
checks read rather than parsing lines. Every command runs inside the container through
`nsenter -t LEADER -a`, with a clean environment and a timeout. Each check prints `PASS name`
or `FAIL name: why`; a failed check never stops the next one. The counts go to --counts.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

UNIT = "rrd.service"
CONFIG = "/etc/rrd/rr.yaml"
SHOP = "/etc/rrd/shop.yaml"  # an admin's config for rrd@shop (not the package's)
SHOP_UNIT = "rrd@shop.service"
SHOP_CONFIG = """version: "3"
server:
  command: "python3 /usr/share/rrd/examples/ticker_app.py"
ticker:
  interval: 500ms
  pool:
    num_workers: 1
"""
WORKER = "/usr/lib/rrd-test/ticker_worker.py"
UNITS_DIR = "/usr/lib/systemd/system"  # where the package put the shipped units
PYTHON = "/usr/bin/python3"  # Debian's, which the package depends on
BOOT_DELAY = 0.3  # seconds each worker takes to start: a reset of 2 takes at least 0.6s
ENV = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_PAGER="]


STATUS_PORT = 39114  # the container shares the host's network: ports unlikely to be taken
METRICS_PORT = 39112
FETCH = (
    "import sys, urllib.request, urllib.error\n"
    "try:\n"
    "    answer = urllib.request.urlopen(sys.argv[1], timeout=5)\n"
    "except urllib.error.HTTPError as error:\n"
    "    answer = error\n"
    "print(answer.status)\n"
    "print(answer.read().decode())\n"
)


class Failed(Exception):
    """A check failed; the message says what was expected and what was seen."""


def config(interval: str = "200ms", grandchild: bool = False) -> str:
    return f"""version: "3"
server:
  command: "{PYTHON} {WORKER}"
  env:
    RRD_TEST_GRANDCHILD: "{1 if grandchild else 0}"
    RRD_TEST_BOOT_DELAY: "{BOOT_DELAY}"
logs:
  mode: production
  level: info
status:
  address: 127.0.0.1:{STATUS_PORT}
metrics:
  address: 127.0.0.1:{METRICS_PORT}
ticker:
  interval: {interval}
  exec_timeout: 5s
  pool:
    num_workers: 2
    destroy_timeout: 5s
    kill_timeout: 1s
"""


BROKEN = """version: "3"
server:
  command: "/usr/bin/python3 /usr/lib/rrd-test/ticker_worker.py"
ticker:
  interval: [not a duration
"""


class Container:
    def __init__(self, leader: int) -> None:
        self.leader = leader

    def run(
        self, *argv: str, timeout: float = 30, stdin: str | None = None, env: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        command = ["nsenter", "-t", str(self.leader), "-a", *ENV, *env, *argv]
        try:
            return subprocess.run(
                command, input=stdin, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise Failed(f"`{' '.join(argv)}` did not return within {timeout:g}s") from None

    def ok(self, *argv: str, timeout: float = 30, **kw: Any) -> str:
        done = self.run(*argv, timeout=timeout, **kw)
        if done.returncode != 0:
            raise Failed(
                f"`{' '.join(argv)}` exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-600:]}"
            )
        return done.stdout

    def show(self, *props: str, unit: str = UNIT) -> dict[str, str]:
        out = self.ok("systemctl", "show", unit, *(f"-p{p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def prop(self, name: str) -> str:
        return self.show(name).get(name, "")

    def rrd(
        self, *args: str, config: str = CONFIG, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """The rrd CLI as an operator runs it: as root, with the unit's config (from which it
        finds the unit's socket in /run/rrd)."""
        return self.run("rrd", *args, "-c", config, timeout=timeout)

    def status(self, config: str = CONFIG) -> dict[str, Any]:
        done = self.rrd("status", "--json", config=config)
        if done.returncode != 0:
            raise Failed(f"`rrd status --json` exited {done.returncode}: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def workers(self) -> set[int]:
        done = self.rrd("workers", "--json")
        if done.returncode != 0:
            raise Failed(f"`rrd workers --json` exited {done.returncode}: {done.stderr.strip()}")
        return {row["pid"] for rows in json.loads(done.stdout).values() for row in rows}

    def unit_processes(self, unit: str = UNIT) -> dict[int, str]:
        """Every process in the unit's cgroup: pid -> command line."""
        done = self.run(
            "busctl", "--json=short", "call", "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
            "GetUnitProcesses", "s", unit,
        )  # fmt: skip
        if done.returncode != 0:
            return {}  # an inactive unit has no processes (and no cgroup)
        return {pid: cmd for _, pid, cmd in json.loads(done.stdout)["data"][0]}

    def alive(self, pids: set[int]) -> set[int]:
        """Those of `pids` that still exist (zombies count as gone)."""
        if not pids:
            return set()
        script = (
            'for p in "$@"; do s=$(sed "s/.*) //" /proc/$p/stat 2>/dev/null | cut -c1) && '
            '[ -n "$s" ] && [ "$s" != Z ] && echo $p; done; true'
        )
        out = self.ok("sh", "-c", script, "sh", *map(str, sorted(pids)))
        return {int(line) for line in out.split()}

    def kill(self, signal: str, pid: int) -> None:
        """The shell's kill (minbase Debian has no /bin/kill: that is procps)."""
        self.ok("sh", "-c", f'kill -{signal} "$1"', "sh", str(pid))

    def apt(self, *args: str, recommends: bool = True, timeout: float = 600) -> str:
        """apt-get as an admin runs it, without questions (a conffile edited here is kept);
        the root's package lists may be days old: on a failed download, update and retry."""
        argv = [
            "apt-get", "-y", "-q",
            "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
        ]  # fmt: skip
        if not recommends:
            argv.append("--no-install-recommends")
        argv.extend(args)
        env = ("DEBIAN_FRONTEND=noninteractive",)
        done = self.run(*argv, timeout=timeout, env=env)
        if done.returncode != 0 and "Failed to fetch" in done.stdout + done.stderr:
            self.ok("apt-get", "update", "-q", timeout=timeout)
            done = self.run(*argv, timeout=timeout, env=env)
        if done.returncode != 0:
            raise Failed(
                f"`apt-get {' '.join(args)}` exited {done.returncode}: "
                f"{(done.stderr + done.stdout).strip()[-800:]}"
            )
        return done.stdout

    def process_uids(self, *pids: int) -> dict[int, int]:
        """pid -> uid (the owner of its /proc entry) of each of `pids`, or of every process."""
        targets = " ".join(f"/proc/{pid}" for pid in pids) or "/proc/[0-9]*"
        out = self.ok("sh", "-c", f"stat -c '%n %u' {targets} 2>/dev/null; true")
        pairs = (line.split() for line in out.splitlines())
        return {int(name.removeprefix("/proc/")): int(uid) for name, uid in pairs}

    def write_config(self, text: str) -> None:
        """An editor's atomic save: a temporary file in the same directory, renamed over."""
        self.ok(
            "sh", "-c",
            "umask 022; cat > /etc/rrd/.rr.yaml.new && mv -f /etc/rrd/.rr.yaml.new " + CONFIG,
            stdin=text,
        )  # fmt: skip

    def cursor(self) -> str:
        out = self.ok("journalctl", "-n1", "-o", "json", "--no-pager")
        return json.loads(out.splitlines()[-1])["__CURSOR"] if out.strip() else ""

    def journal(self, after: str = "", unit: str = UNIT) -> list[dict[str, Any]]:
        argv = ["journalctl", "-u", unit, "-o", "json", "--no-pager"]
        if after:
            argv.append(f"--after-cursor={after}")
        out = self.ok(*argv, timeout=60)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def events(self, name: str, after: str = "") -> list[dict[str, Any]]:
        """rrd's journal entries of one event, since the cursor."""
        return [e for e in self.journal(after) if e.get("EVENT") == name]

    def systemd_says(self, after: str) -> list[str]:
        """What PID 1 logged about the unit since the cursor."""
        return [text(e.get("MESSAGE")) for e in self.journal(after) if e.get("_PID") == "1"]


def text(message: Any) -> str:
    """journalctl -o json gives a non-UTF-8 MESSAGE as a list of bytes."""
    if isinstance(message, list):
        return bytes(message).decode("utf-8", "replace")
    return message if isinstance(message, str) else repr(message)


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, every: float = 0.1) -> Any:
    """The first true value of predicate(); Failed naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Failed as exc:
            last_error = exc
        if time.monotonic() > deadline:
            extra = f" (last error: {last_error})" if last_error else ""
            raise Failed(f"{what} not within {timeout:g}s{extra}")
        time.sleep(every)


def holds(what: str, predicate: Callable[[], Any], seconds: float, every: float = 0.1) -> None:
    """Failed unless `predicate` is true at every look for `seconds`: a window in which
    something must not happen is watched all along, not slept through."""
    deadline = time.monotonic() + seconds
    while True:
        if not predicate():
            raise Failed(f"{what} stopped holding")
        if time.monotonic() > deadline:
            return
        time.sleep(every)


class Stage:
    def __init__(self, box: Container, deb: str) -> None:
        self.box = box
        self.deb = deb  # the package, inside the container
        self.passed = 0
        self.failed = 0
        self.main_pids: set[int] = set()  # every MainPID rrd had: its journal lines are checked
        self.old_units_processes: dict[int, str] = {}

    def check(self, name: str, body: Callable[[], str | None]) -> None:
        began = time.monotonic()
        try:
            note = body()
        except Failed as exc:
            self.failed += 1
            print(f"FAIL {name}: {exc} ({time.monotonic() - began:.1f}s)", flush=True)
            return
        except Exception as exc:  # a bug in this harness: still a failed check, and why
            self.failed += 1
            print(f"FAIL {name}: harness error {type(exc).__name__}: {exc}", flush=True)
            return
        self.passed += 1
        suffix = f": {note}" if note else ""
        print(f"PASS {name}{suffix} ({time.monotonic() - began:.1f}s)", flush=True)

    def main_pid(self) -> int:
        pid = int(self.box.prop("MainPID") or 0)
        if pid:
            self.main_pids.add(pid)
        return pid

    def serving(self, pid: int | None = None) -> dict[str, str]:
        """The unit is active/running, STATUS= says 2/2 workers, and rrd answers."""
        state = self.box.show("ActiveState", "SubState", "StatusText", "MainPID")
        if (state.get("ActiveState"), state.get("SubState")) != ("active", "running"):
            return {}
        if not re.search(r"ticker: 2/2 workers", state.get("StatusText", "")):
            return {}
        if pid is not None and int(state["MainPID"]) == pid:
            return {}
        if self.box.status().get("pid") != int(state["MainPID"]):
            return {}
        self.main_pids.add(int(state["MainPID"]))
        return state

    def running(self) -> int:
        """rrd's MainPID once the unit serves, started first if it is not active."""
        if self.box.prop("ActiveState") != "active":
            self.box.ok("systemctl", "start", UNIT, timeout=60)
        return int(wait_until("the unit serving", self.serving, 30)["MainPID"])

    def ticks_delivered(self) -> int:
        return int(self.box.status()["plugins"]["ticker"]["ticks"]["delivered"])

    def uid_of(self, user: str) -> int:
        return int(self.box.ok("getent", "passwd", user).split(":")[2])

    # P1
    def apt_install(self) -> str:
        """`apt install ./rrd_*.deb` into a root without Python: apt brings rrd's python3-*
        dependencies from Debian; the package makes the user rrd, enables and starts the unit
        on the config it ships, whose example worker then ticks."""
        began = time.monotonic()
        said = self.box.apt("install", self.deb, timeout=900)
        took = time.monotonic() - began
        added = re.search(r"(\d+) newly installed", said)
        enabled = self.box.run("systemctl", "is-enabled", UNIT).stdout.strip()
        if enabled != "enabled":
            raise Failed(f"after the install the unit is {enabled!r}, not enabled")
        state = wait_until("the installed unit serving 2/2 workers", self.serving, 30)
        pid = int(state["MainPID"])
        uid = self.uid_of("rrd")
        running_as = self.box.process_uids(pid).get(pid)
        if running_as != uid:
            raise Failed(f"rrd {pid} runs as uid {running_as}, not the user rrd ({uid})")
        delivered = wait_until("ticks delivered", lambda: self.ticks_delivered() >= 2, 10)
        assert delivered
        # As the README says an operator asks: as root, without RUNTIME_DIRECTORY.
        plain = self.box.run("rrd", "status", "-c", CONFIG)
        if plain.returncode != 0 or "ticker" not in plain.stdout:
            raise Failed(f"`rrd status -c {CONFIG}` as root: {plain.stderr or plain.stdout}")
        files = set(self.box.ok("dpkg", "-L", "rrd").split())
        wanted = {
            "/usr/bin/rrd", "/usr/lib/systemd/system/rrd.service",
            "/usr/lib/systemd/system/rrd@.service", "/usr/lib/sysusers.d/rrd.conf",
            "/usr/share/man/man8/rrd.8.gz", "/usr/share/man/man5/rr.yaml.5.gz",
            "/usr/share/doc/rrd/README.md.gz", "/usr/share/doc/rrd/copyright",
            "/usr/share/rrd/examples/ticker_app.py", CONFIG,
        }  # fmt: skip
        if wanted - files:
            raise Failed(f"the package lacks {sorted(wanted - files)}")
        conffiles = self.box.ok("dpkg-query", "-W", "-f=${Conffiles}", "rrd")
        if CONFIG not in conffiles:
            raise Failed(f"{CONFIG} is not a conffile: {conffiles!r}")
        recommended = self.box.run("dpkg-query", "-W", "-f=${Status}", "python3-systemd")
        if "install ok installed" not in recommended.stdout:
            raise Failed("python3-systemd (Recommends) was not installed")
        warnings = [
            text(e.get("MESSAGE"))
            for e in self.box.journal()
            if e.get("SYSLOG_IDENTIFIER") == "rrd" and int(e.get("PRIORITY", 6)) <= 4
        ]
        if warnings:
            raise Failed(f"rrd warned on the shipped config: {warnings}")
        rss = self.box.ok("sed", "-n", "s/^VmRSS:[[:space:]]*//p", f"/proc/{pid}/status").strip()
        return (
            f"apt installed rrd and {int(added[1]) - 1 if added else '?'} other packages in "
            f"{took:.1f}s; enabled, active as user rrd (uid {uid}), "
            f"{state['StatusText']!r}, ticks delivered; rrd's RSS {rss}"
        )

    # P2
    def edit_and_reload(self) -> str:
        """The admin's path: edit /etc/rrd/rr.yaml (here to the checks' config: their worker,
        200ms ticks, probes and metrics), then `systemctl reload rrd`."""
        pid = self.main_pid()
        before = self.box.workers()
        self.box.write_config(config())
        began = time.monotonic()
        self.box.ok("systemctl", "reload", UNIT, timeout=60)
        took = time.monotonic() - began

        def applied() -> set[int]:
            report = self.box.status()
            ticker = report["plugins"]["ticker"]
            if ticker.get("interval_s") != 0.2 or ticker["pool"]["ready"] + ticker["pool"][
                    "busy"] != 2:  # fmt: skip
                return set()
            workers = self.box.workers()
            commands = {w: self.box.ok("cat", f"/proc/{w}/cmdline") for w in workers}
            return workers if all(WORKER in c for c in commands.values()) else set()

        after = wait_until("the edited config serving", applied, 15)
        if after & before:
            raise Failed(f"workers {sorted(after & before)} of the old config still serve")
        if self.main_pid() != pid:
            raise Failed(f"rrd restarted ({pid} -> {self.main_pid()}) instead of reloading")
        return f"`systemctl reload` returned in {took:.2f}s; workers {sorted(before)} -> " + str(
            sorted(after)
        )

    # 1
    def start(self) -> str:
        if self.box.prop("ActiveState") == "active":  # as the package left it: start afresh
            self.box.ok("systemctl", "stop", UNIT, timeout=120)
        began = time.monotonic()
        self.box.ok("systemctl", "start", UNIT, timeout=60)
        took = time.monotonic() - began
        state = self.box.show("ActiveState", "SubState", "StatusText", "MainPID")
        self.main_pids.add(int(state["MainPID"]))
        if (state["ActiveState"], state["SubState"]) != ("active", "running"):
            raise Failed(f"after `systemctl start` the unit is {state}")
        if not re.search(r"ticker: 2/2 workers", state["StatusText"]):
            raise Failed(f"StatusText is {state['StatusText']!r}, expected 'ticker: 2/2 workers'")
        report = self.box.status()
        pool = report["plugins"]["ticker"]["pool"]
        if report["state"] != "running" or pool["ready"] + pool["busy"] != 2:
            raise Failed(
                f"systemctl start returned before rrd was ready: {report['state']}, {pool}"
            )
        return f"ready in {took:.2f}s, StatusText={state['StatusText']!r}"

    # 2
    def reload(self) -> str:
        pid = self.main_pid()
        before = self.box.workers()
        if len(before) != 2:
            raise Failed(f"expected 2 workers before the reload, rrd lists {sorted(before)}")
        cursor = self.box.cursor()
        began = time.monotonic()
        self.box.ok("systemctl", "reload", UNIT, timeout=60)
        took = time.monotonic() - began
        if took < 2 * BOOT_DELAY:
            raise Failed(
                f"`systemctl reload` returned in {took:.2f}s, before 2 workers that take "
                f"{BOOT_DELAY}s each to start could have been replaced"
            )
        after = self.box.workers()
        if before & after or len(after) != 2:
            raise Failed(
                f"`systemctl reload` returned 0 with workers {sorted(after)} serving; "
                f"before it: {sorted(before)} (every one should have been replaced)"
            )
        if self.main_pid() != pid:
            raise Failed(f"rrd's MainPID changed over a reload: {pid} -> {self.main_pid()}")
        wait_until(
            f"the replaced workers {sorted(before)} to exit", lambda: not self.box.alive(before), 15
        )
        done = self.box.events("pool.reset_done", cursor)
        reset = f", rrd's reset took {float(done[-1]['DURATION_MS']):g}ms" if done else ""
        return f"returned in {took:.2f}s{reset}; workers {sorted(before)} -> {sorted(after)}"

    # 3
    def file_reload(self) -> str:
        pid = self.main_pid()
        seen: list[str] = []
        cursor = self.box.cursor()
        self.box.ok("systemd-analyze", "log-level", "debug")  # PID 1 logs each state change
        try:
            self.box.write_config(config(interval="300ms"))

            def back_to_running() -> bool:
                seen.append(self.box.prop("SubState"))
                said = self.box.systemd_says(cursor)
                return any("Changed reload-notify -> running" in m for m in said)

            wait_until("the unit going reload-notify -> running", back_to_running, 20, every=0.02)
        finally:
            self.box.run("systemd-analyze", "log-level", "info")
        said = self.box.systemd_says(cursor)
        if not any("Changed running -> reload-notify" in m for m in said):
            raise Failed(f"systemd never put the unit in reload-notify; it said: {said[-10:]}")
        interval = wait_until(
            "rrd status showing interval_s 0.3",
            lambda: self.box.status()["plugins"]["ticker"].get("interval_s") == 0.3,
            10,
        )
        assert interval
        if self.main_pid() != pid:
            raise Failed("rrd restarted instead of reloading")
        records = self.box.events("config.reloaded", cursor)
        reloaded = [
            r
            for r in records
            if r.get("SOURCE") == "file"
            and any("ticker.interval" in c for c in json.loads(r.get("CHANGES", "[]")))
        ]
        if not reloaded:
            raise Failed(f"no config.reloaded entry for the saved file; rrd logged: {records}")
        polled = "seen by polling too" if "reload-notify" in seen else "too brief for polling"
        said = text(reloaded[-1]["MESSAGE"])
        return f"running -> reload-notify -> running (PID 1's log; {polled}); {said}"

    # 4
    def broken_config(self) -> str:
        pid = self.main_pid()
        before = self.box.workers()
        self.box.write_config(BROKEN)
        status = wait_until(
            "StatusText saying 'config rejected'",
            lambda: "config rejected" in (s := self.box.prop("StatusText")) and s,
            15,
        )
        state = self.box.show("ActiveState", "SubState", "MainPID")
        if (state["ActiveState"], state["SubState"], int(state["MainPID"])) != (
            "active", "running", pid
        ):  # fmt: skip
            raise Failed(f"a broken config took the unit to {state} (rrd was {pid})")
        now = self.box.workers()
        if now != before:
            raise Failed(
                f"a rejected config changed the workers: {sorted(before)} -> {sorted(now)}"
            )
        self.box.write_config(config(interval="200ms"))
        wait_until(
            "StatusText without 'config rejected' after the good config came back",
            lambda: "config rejected" not in self.box.prop("StatusText"),
            15,
        )
        wait_until(
            "interval_s back to 0.2",
            lambda: self.box.status()["plugins"]["ticker"].get("interval_s") == 0.2,
            10,
        )
        return f"StatusText={status!r}; restored"

    # 5
    def watchdog(self) -> str:
        pid = self.main_pid()
        restarts = int(self.box.prop("NRestarts"))
        cursor = self.box.cursor()
        began = time.monotonic()
        self.box.kill("STOP", pid)
        state = wait_until(
            "a new rrd serving after SIGSTOP", lambda: self.serving(pid), 45, every=0.2
        )
        took = time.monotonic() - began
        said = self.box.systemd_says(cursor)
        if not any("atchdog timeout" in m for m in said):
            raise Failed(f"systemd did not log a watchdog timeout; it said: {said[-8:]}")
        if not any("result 'watchdog'" in m for m in said):
            raise Failed(f"no \"Failed with result 'watchdog'\"; systemd said: {said[-8:]}")
        now = int(self.box.prop("NRestarts"))
        if now != restarts + 1:
            raise Failed(f"NRestarts went {restarts} -> {now}, expected one restart")
        if self.box.alive({pid}):
            raise Failed(f"the stopped rrd {pid} is still there")
        return f"rrd {pid} -> {state['MainPID']} in {took:.1f}s, NRestarts {restarts} -> {now}"

    # 6
    def kill9(self) -> str:
        pid = self.main_pid()
        before = self.box.workers()
        cursor = self.box.cursor()
        self.box.write_config(config(grandchild=True))  # workers replaced by ones that double-fork

        def grandchildren() -> set[int]:
            said = [text(e.get("MESSAGE")) for e in self.box.journal(cursor)]
            found = {int(n) for m in said for n in re.findall(r"grandchild (\d+)", m)}
            workers = self.box.workers()
            return (
                found if len(found) >= 2 and len(workers) == 2 and not workers & before else set()
            )

        left = wait_until(
            "two workers with a double-forked grandchild each", grandchildren, 30, 0.3
        )
        procs = self.box.unit_processes()
        if not left <= set(procs):
            raise Failed(f"grandchildren {sorted(left)} are not in the unit's cgroup: {procs}")
        workers = self.box.workers()
        old = set(procs) | workers | left
        cursor = self.box.cursor()
        self.box.kill("KILL", pid)
        state = wait_until("a new rrd serving after SIGKILL", lambda: self.serving(pid), 30, 0.2)
        try:
            wait_until("every process of the killed rrd gone", lambda: not self.box.alive(old), 10)
        except Failed:
            left_over = {p: procs.get(p, "?") for p in self.box.alive(old)}
            raise Failed(
                f"processes of the killed rrd {pid} are still running: {left_over}"
            ) from None
        said = self.box.systemd_says(cursor)
        if not any("result 'signal'" in m for m in said):
            raise Failed(f"no \"Failed with result 'signal'\"; systemd said: {said[-8:]}")
        return (
            f"rrd {pid} -> {state['MainPID']}; gone: workers {sorted(workers)}, "
            f"grandchildren {sorted(left)}"
        )

    # P7
    def instance(self) -> str:
        """rrd@shop from the package, beside rrd.service: its own config, dynamic user and
        socket, which root's CLI finds from the config alone. It stays up for P3 and P4."""
        self.box.ok("sh", "-c", f"umask 022; cat > {SHOP}", stdin=SHOP_CONFIG)
        started = self.box.run("systemctl", "start", SHOP_UNIT, timeout=60)
        if started.returncode != 0:
            said = [text(e.get("MESSAGE")) for e in self.box.journal(unit=SHOP_UNIT)[-6:]]
            raise Failed(f"`systemctl start {SHOP_UNIT}` exited {started.returncode}: {said}")
        state = self.box.show("ActiveState", "MainPID", "StatusText", unit=SHOP_UNIT)
        if state["ActiveState"] != "active" or "ticker: 1/1 workers" not in state["StatusText"]:
            raise Failed(f"{SHOP_UNIT} after start: {state}")
        report = self.box.status(config=SHOP)
        if report["pid"] != int(state["MainPID"]) or report["config"] != SHOP:
            raise Failed(f"`rrd status -c {SHOP}` reached pid {report['pid']} serving "
                         f"{report['config']}, not {SHOP_UNIT}'s {state['MainPID']}")  # fmt: skip
        uid = self.box.process_uids(int(state["MainPID"]))[int(state["MainPID"])]
        if uid in (0, self.uid_of("rrd")):
            raise Failed(f"{SHOP_UNIT} runs as uid {uid}, not a dynamic user of its own")
        return (
            f"{SHOP_UNIT} up ({state['StatusText']!r}) as uid {uid}; `rrd status -c {SHOP}` "
            f"reached it at /run/rrd-shop/rrd.sock"
        )

    # P3
    def reinstall(self) -> str:
        """The upgrade path: apt installs the same package again; the postinst restarts the
        unit (dh_installsystemd: the old rrd is stopped gracefully, the new one started), and
        the edited conffile is kept."""
        pid = self.running()
        procs = set(self.box.unit_processes())
        shop_pid = self.box.show("MainPID", unit=SHOP_UNIT)["MainPID"]
        edited = self.box.ok("cat", CONFIG)
        cursor = self.box.cursor()
        began = time.monotonic()
        self.box.apt("install", "--reinstall", self.deb)
        took = time.monotonic() - began
        state = wait_until("a new rrd serving", lambda: self.serving(pid), 30)
        left = self.box.alive(procs)
        if left:
            raise Failed(f"processes of the old rrd outlived the upgrade: {sorted(left)}")
        said = self.box.systemd_says(cursor)
        bad = [m for m in said if "Killing process" in m or "Failed with result" in m]
        if bad:
            raise Failed(f"the restart was not clean; systemd said: {bad}")
        stopped = [e for e in self.box.events("daemon.stopped", cursor) if int(e["_PID"]) == pid]
        if not stopped or stopped[-1].get("EXIT_CODE") != "0":
            raise Failed(f"rrd {pid} did not stop gracefully: {stopped}")
        if self.box.ok("cat", CONFIG) != edited:
            raise Failed(f"the upgrade did not keep the edited {CONFIG}")
        shop = self.box.show("ActiveState", "MainPID", unit=SHOP_UNIT)
        if shop["ActiveState"] != "active" or shop["MainPID"] in ("0", shop_pid):
            raise Failed(f"{SHOP_UNIT} was not restarted by the upgrade: {shop_pid} -> {shop}")
        return (
            f"apt took {took:.1f}s; rrd {pid} stopped (exit 0) and {state['MainPID']} serves; "
            f"the old {len(procs)} processes are gone; the edited config was kept; "
            f"{SHOP_UNIT} {shop_pid} -> {shop['MainPID']}"
        )

    # P4
    def remove(self) -> str:
        """`apt remove rrd`: the unit is stopped and not a process of it, or of the user rrd,
        is left; the config stays (as remove keeps conffiles), the program goes."""
        pid = self.running()
        procs = set(self.box.unit_processes())
        shop_procs = set(self.box.unit_processes(SHOP_UNIT))
        if not shop_procs:
            raise Failed(f"{SHOP_UNIT} is not running before the removal (P7 starts it)")
        uid = self.uid_of("rrd")
        self.box.apt("remove", "rrd")
        for unit in (UNIT, SHOP_UNIT):
            state = self.box.show("ActiveState", "LoadState", unit=unit)
            if state.get("ActiveState") != "inactive":
                raise Failed(f"after apt remove {unit} is {state}")
        left = self.box.alive(procs | shop_procs)
        theirs = {p for p, u in self.box.process_uids().items() if u == uid}
        if left or theirs:
            raise Failed(f"left running: {sorted(left | theirs)}")
        if self.box.run("test", "-e", "/usr/bin/rrd").returncode == 0:
            raise Failed("/usr/bin/rrd is still there")
        if self.box.run("test", "-f", CONFIG).returncode != 0:
            raise Failed(f"apt remove took {CONFIG} (only purge may)")
        return (
            f"rrd {pid} and its {len(procs) - 1} workers gone, {SHOP_UNIT}'s "
            f"{len(shop_procs)} processes too, no process of uid {uid}; {CONFIG} kept"
        )

    # P5
    def purge(self) -> str:
        """`apt purge rrd`: the config and the state go; the user rrd stays (Debian's way:
        files elsewhere may still carry its uid)."""
        state_dir = self.box.run("test", "-d", "/var/lib/private/rrd").returncode == 0
        self.box.apt("purge", "rrd")
        left = [
            path
            for path in (
                CONFIG,
                "/var/lib/private/rrd",
                "/var/lib/rrd",
                "/var/lib/private/rrd-shop",
            )
            if self.box.run("test", "-e", path).returncode == 0
        ]
        if left:
            raise Failed(f"apt purge left {left}")
        # The admin's own file is not the package's to take, nor is the directory holding it.
        kept = self.box.ok("ls", "-A", "/etc/rrd").split()
        if kept != ["shop.yaml"]:
            raise Failed(f"after the purge /etc/rrd holds {kept}, expected the admin's shop.yaml")
        self.box.ok("rm", "-r", "/etc/rrd")
        status = self.box.run("dpkg-query", "-W", "-f=${Status}", "rrd").stdout
        if "not-installed" not in status and status:
            raise Failed(f"dpkg still knows rrd: {status!r}")
        return (
            f"{CONFIG} and {'the state in /var/lib/private/rrd' if state_dir else 'no state'} "
            f"removed, the admin's {SHOP} kept; user rrd kept (uid {self.uid_of('rrd')})"
        )

    # P6
    def autopkgtest(self) -> str:
        """The package again, on a purged system (a fresh config), then its autopkgtest
        (debian/tests) with autopkgtest's null runner, here, beside the running service."""
        self.box.apt("install", self.deb)
        wait_until("the reinstalled unit serving", self.serving, 30)
        if "/usr/share/rrd/examples/ticker_app.py" not in self.box.ok("cat", CONFIG):
            raise Failed(f"after a purge, the install did not bring back the shipped {CONFIG}")
        self.box.apt("install", "autopkgtest", recommends=False)
        done = self.box.run("autopkgtest", self.deb, "/root/rrd-src", "--", "null", timeout=600)
        out = done.stdout + done.stderr
        result = re.findall(r"^(serve-example)\s+(\S+)", out, re.M)
        if done.returncode != 0 or set(result) != {("serve-example", "PASS")}:
            raise Failed(f"autopkgtest exited {done.returncode}: {out.strip()[-1500:]}")
        said = re.search(r"^ok: .*$", out, re.M)
        return f"autopkgtest: serve-example PASS ({said[0] if said else ''})"

    # 8
    def stop(self) -> str:
        pid = self.main_pid()
        procs = self.box.unit_processes()
        cursor = self.box.cursor()
        began = time.monotonic()
        self.box.ok("systemctl", "stop", UNIT, timeout=120)
        took = time.monotonic() - began
        state = self.box.show("ActiveState", "Result", "ExecMainStatus")
        if state["Result"] != "success" or state["ActiveState"] != "inactive":
            raise Failed(f"after `systemctl stop`: {state}")
        if state["ExecMainStatus"] != "0":
            raise Failed(f"rrd exited {state['ExecMainStatus']}, expected 0")
        left = self.box.alive(set(procs))
        if left:
            raise Failed(f"still running after the stop: {sorted(left)}")
        said = self.box.systemd_says(cursor)
        killed = [m for m in said if "Killing process" in m]
        if killed:
            raise Failed(f"rrd exited leaving processes that systemd had to kill: {killed}")
        return f"stopped in {took:.2f}s; its {len(procs)} processes (rrd {pid} and below) are gone"

    # 13
    def probes_and_metrics(self) -> str:
        """RoadRunner's status and metrics plugins under the unit's sandbox (its address
        families, its dynamic user): what a kubelet and Prometheus get."""

        def get(port: int, path: str) -> tuple[int, str]:
            out = self.box.ok(PYTHON, "-c", FETCH, f"http://127.0.0.1:{port}{path}")
            code, _, body = out.partition("\n")
            return int(code), body

        health = get(STATUS_PORT, "/health?plugin=ticker")
        expected = [{"plugin_name": "ticker", "error_message": "", "status_code": 200}]
        if health[0] != 200 or json.loads(health[1]) != expected:
            raise Failed(f"/health answered {health}")
        ready = get(STATUS_PORT, "/ready?plugin=ticker")
        if ready[0] != 200:
            raise Failed(f"/ready answered {ready}")
        code, text = get(METRICS_PORT, "/metrics")
        total = re.search(r"^rr_ticker_total_workers (\S+)$", text, re.M)
        delivered = re.search(
            r'^rrd_ticker_ticks_total\{[^}]*outcome="delivered"[^}]*\} (\S+)$', text, re.M
        )
        if code != 200 or not total or float(total[1]) != 2 or not delivered:
            raise Failed(f"/metrics answered {code}: {text[:300]!r}")
        kept = json.loads(self.box.ok("cat", "/var/lib/rrd/ticker.json"))
        if "default" not in kept.get("schedules", {}):
            raise Failed(f"StateDirectory's ticker.json holds {kept}")
        return (
            f"/health 200 {health[1].strip()}, /ready 200, /metrics: rr_ticker_total_workers "
            f"{total[1]}, {delivered[1]} ticks delivered; /var/lib/rrd/ticker.json kept"
        )

    # 7
    def journal_entries(self) -> str:
        entries = self.box.journal()
        ours = [e for e in entries if e.get("_PID") and int(e["_PID"]) in self.main_pids]
        if not ours:
            raise Failed(f"no journal entry from rrd (pids {sorted(self.main_pids)})")
        events: dict[str, int] = {}
        for entry in ours:
            message = text(entry.get("MESSAGE"))
            if entry.get("_TRANSPORT") != "journal":
                raise Failed(
                    f"rrd {entry['_PID']} wrote to its {entry.get('_TRANSPORT')} stream rather "
                    f"than sending an entry: {message[:300]!r}"
                )
            missing = {"PRIORITY", "EVENT", "LOGGER"} - entry.keys()
            if missing or entry.get("SYSLOG_IDENTIFIER") != "rrd":
                raise Failed(f"an entry lacks {sorted(missing)} or SYSLOG_IDENTIFIER=rrd: {entry}")
            if message.startswith("{"):
                raise Failed(f"MESSAGE is a JSON line, not the message: {message[:300]!r}")
            events[entry["EVENT"]] = events.get(entry["EVENT"], 0) + 1
        strangers = {
            e.get("_PID")
            for e in entries
            if e.get("_PID") not in (None, "1") and int(e["_PID"]) not in self.main_pids
        }
        if strangers:
            raise Failed(f"journal lines from processes that are not rrd: pids {sorted(strangers)}")
        return f"{len(ours)} entries from rrd pids {sorted(self.main_pids)}, {len(events)} events"

    # 11
    def worker_crash_entry(self) -> str:
        pid = self.main_pid()
        maps = self.box.ok("cat", f"/proc/{pid}/maps")
        if "/systemd/_journal." not in maps:
            raise Failed(f"rrd {pid} has not loaded python3-systemd's _journal module")
        victim = min(self.box.workers())
        cursor = self.box.cursor()
        self.box.kill("KILL", victim)
        match = ("-p", "warning", "PLUGIN=ticker", f"WORKER_PID={victim}")

        def crash() -> list[dict[str, Any]]:
            out = self.box.ok(
                "journalctl", "-u", UNIT, *match, "-o", "json", "--no-pager",
                f"--after-cursor={cursor}",
            )  # fmt: skip
            found = [json.loads(line) for line in out.splitlines() if line.strip()]
            return [e for e in found if e.get("EVENT") == "worker.exited"]

        (entry, *_) = wait_until(f"`journalctl -u {UNIT} {' '.join(match)}`", crash, 15)
        expected = {
            "SYSLOG_IDENTIFIER": "rrd",
            "PLUGIN": "ticker",
            "WORKER_PID": str(victim),
            "REASON": "crashed",
            "_PID": str(pid),
            "_TRANSPORT": "journal",
        }
        wrong = {k: entry.get(k) for k, v in expected.items() if entry.get(k) != v}
        if wrong or int(entry["PRIORITY"]) > 4:
            raise Failed(f"expected {expected} and PRIORITY <= 4, the entry has {wrong}: {entry}")
        wait_until("2 workers again", lambda: self.serving(), 20, every=0.2)
        return (
            f"python3-systemd; `journalctl {' '.join(match)}`: {text(entry['MESSAGE'])!r}, "
            f"PRIORITY={entry['PRIORITY']}, EVENT={entry['EVENT']}, "
            f"EXIT_CODE={entry.get('EXIT_CODE')}"
        )

    # 12
    def journal_without_python3_systemd(self) -> str:
        """rrd's two other ways to the journal, under a real journald: its own client of the
        native protocol (python3-systemd hidden), and `<N>` lines (the socket out of reach)."""
        script = (
            "import logging, sys\n"
            "if sys.argv[1] == 'native':\n"
            "    sys.modules['systemd'] = None\n"
            "from rrd import logging as rrd_logging\n"
            "print(rrd_logging.configure(journal_socket=sys.argv[2]), flush=True)\n"
            "logging.getLogger('rrd.check').warning('a %s entry', sys.argv[1],\n"
            "    extra={'event': 'check.journal', 'plugin': 'ticker', 'worker_pid': 1})\n"
            "assert rrd_logging.shutdown()\n"
        )
        seen = []
        for kind, path in (("native", "/run/systemd/journal/socket"), ("prefix", "/run/none")):
            unit = f"rrd-check-{kind}-{time.monotonic_ns()}.service"
            self.box.ok(
                "systemd-run", f"--unit={unit}", "--wait", "--quiet",
                PYTHON, "-c", script, kind, path, timeout=60,
            )  # fmt: skip

            def logged(unit: str = unit) -> list[dict[str, Any]]:
                """The script's entries (PID 1's name the unit by its command line)."""
                entries = [e for e in self.box.journal(unit=unit) if e.get("_PID") != "1"]
                return entries if len(entries) >= 2 else []

            entries = wait_until(f"the journal entries of {unit}", logged, 10)
            said = [text(e.get("MESSAGE")) for e in entries]
            target = "journal-socket" if kind == "native" else "priority-prefix"
            if target not in said:
                raise Failed(f"{unit}: expected rrd to choose {target}; it said {said}")
            entry = next(
                e
                for e in entries
                if e.get("EVENT") == "check.journal" or "check.journal" in text(e.get("MESSAGE"))
            )
            if kind == "native":
                good = entry.get("_TRANSPORT") == "journal" and entry.get("PLUGIN") == "ticker"
            else:
                record = json.loads(text(entry["MESSAGE"]))
                good = entry.get("_TRANSPORT") == "stdout" and record["plugin"] == "ticker"
            if not good or entry.get("PRIORITY") != "4":
                raise Failed(f"{unit}: expected PRIORITY=4 and the plugin, got {entry}")
            seen.append(f"{target}: {entry['_TRANSPORT']}, PRIORITY={entry['PRIORITY']}")
        return "; ".join(seen)

    # 10
    def bad_config_at_start(self) -> str:
        cursor = self.box.cursor()
        self.box.write_config(BROKEN)
        try:
            done = self.box.run("systemctl", "start", UNIT, timeout=60)
            if done.returncode == 0:
                raise Failed("`systemctl start` succeeded with a broken config")
            state: dict[str, str] = {}

            def failed_78() -> bool:
                state.update(self.box.show("ActiveState", "ExecMainStatus"))
                return (state["ActiveState"], state["ExecMainStatus"]) == ("failed", "78")

            # A restart would come after RestartSec=200ms: the unit must stay failed all along.
            try:
                holds("the unit failed with exit 78", failed_78, 1.5)
            except Failed:
                raise Failed(f"expected failed with exit 78 throughout 1.5s, got {state}") from None
            restarts = [m for m in self.box.systemd_says(cursor) if "Scheduled restart" in m]
            if restarts:
                raise Failed(f"exit 78 was restarted: {restarts}")
            said = [
                text(e.get("MESSAGE"))
                for e in self.box.journal(cursor)
                if e.get("SYSLOG_IDENTIFIER") == "rrd"
            ]
            if not any(CONFIG in m for m in said):
                raise Failed(f"rrd did not say what is wrong with {CONFIG}: {said}")
        finally:
            self.box.write_config(config())
            self.box.run("systemctl", "reset-failed", UNIT)
        return f"failed, not restarted; rrd said: {said[-1]!r}"

    # 9
    def lint(self) -> str:
        units = [f"{UNITS_DIR}/rrd.service", f"{UNITS_DIR}/rrd@.service"]
        done = self.box.run("systemd-analyze", "verify", "--man=no", *units, timeout=60)
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0 or output:
            raise Failed(f"systemd-analyze verify (exit {done.returncode}) said: {output}")
        # The systemd-252 drop-in parses too (a minbase root has no /bin/kill: that is procps).
        done = self.box.run(
            "systemd-analyze", "verify", "--man=no", "/root/rrd-units-252/rrd.service", timeout=60
        )
        complaints = [
            line
            for line in (done.stdout + done.stderr).splitlines()
            if line.strip() and "Command /bin/kill is not executable" not in line
        ]
        if complaints:
            raise Failed(f"rrd.service with systemd-252.conf: {complaints}")
        scores = []
        for unit in (f"{UNITS_DIR}/rrd.service", f"{UNITS_DIR}/rrd@.service"):
            security = ("systemd-analyze", "security", "--offline=yes", "--threshold=20")
            done = self.box.run(*security, "--no-pager", unit, timeout=60)
            found = re.search(r"Overall exposure level for (\S+): ([\d.]+) (.*)", done.stdout)
            if not found:
                raise Failed(f"no exposure for {unit}: {(done.stdout + done.stderr)[-400:]}")
            scores.append(f"{found[1]} {found[2]} {found[3].strip()}")
            if done.returncode != 0:
                raise Failed(f"{unit}: exposure {found[2]} is over 2.0 (exit {done.returncode})")
        return "; ".join(scores)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--print-config", action="store_true", help="print the test config")
    parser.add_argument("--leader", type=int, help="the container's PID 1, as the host sees it")
    parser.add_argument("--counts", help="file to write 'PASSED FAILED' to")
    parser.add_argument("--deb", help="the package to install, as a path inside the container")
    args = parser.parse_args()
    if args.print_config:
        print(config(), end="")
        return 0
    if not args.leader or not args.counts or not args.deb:
        parser.error("--leader, --counts and --deb are needed")
    stage = Stage(Container(args.leader), args.deb)
    stage.check("P1 apt-install-starts", stage.apt_install)
    stage.check("P2 edit-config-and-reload", stage.edit_and_reload)
    stage.check("1 start-ready", stage.start)
    stage.check("2 reload-replaces-workers", stage.reload)
    stage.check("3 atomic-save-reload-notify", stage.file_reload)
    stage.check("4 broken-config-rejected", stage.broken_config)
    stage.check("11 worker-crash-journal-entry", stage.worker_crash_entry)
    stage.check("5 watchdog-restart", stage.watchdog)
    stage.check("6 kill9-leaves-nothing", stage.kill9)
    stage.check("13 probes-and-metrics", stage.probes_and_metrics)
    stage.check("P7 instance-beside-it", stage.instance)
    stage.check("P3 reinstall-restarts", stage.reinstall)
    stage.check("8 stop-success", stage.stop)
    stage.check("7 journal-entries", stage.journal_entries)
    stage.check("9 lint-units", stage.lint)
    stage.check("10 bad-config-at-start", stage.bad_config_at_start)
    stage.check("12 journal-without-python3-systemd", stage.journal_without_python3_systemd)
    stage.check("P4 apt-remove-leaves-nothing", stage.remove)
    stage.check("P5 apt-purge-removes-config", stage.purge)
    stage.check("P6 autopkgtest", stage.autopkgtest)
    with open(args.counts, "w") as counts:
        counts.write(f"{stage.passed} {stage.failed}\n")
    return 1 if stage.failed else 0


if __name__ == "__main__":
    sys.exit(main())
