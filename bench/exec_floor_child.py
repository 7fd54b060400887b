"""The raw-pipe floor of bench/exec.py: two Python processes passing exec frames with bare
os.read and os.write, the least any Python supervisor can spend on one round trip.

Started by bench/exec.py, not by hand:

    python bench/exec_floor_child.py parent SIZE COUNT WARMUP CHILDREN CPUS

starts CHILDREN children (`exec_floor_child.py echo SIZE CPUS`, each on two pipes, on those
CPUs, `-` for anywhere), runs WARMUP round trips, prints `ready`, waits for a line on stdin,
runs COUNT round trips, one in flight per child, and prints one JSON line: `start_ns` and
`end_ns` (CLOCK_MONOTONIC) and `latencies_ns`. One parent for every child, as rrd is one
process for all its workers. A round trip is what rrd does for one exec: write the request
frame (the one `Pool.exec` writes for a body of SIZE bytes), read the reply's 12-byte header,
then the rest of it. A child does the same the other way round, answering with the frame
tests/workers/sdk_echo.py would (`OK:` + body), encoded once.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rrd.protocol.control import Payload, payload_frame

HEADER_SIZE = 12
_LEADING = struct.Struct("<BBI")  # version << 4 | header words, flags, payload length


def body_of(size: int) -> bytes:
    """The body every peer in bench/exec.py sends for a payload of `size` bytes."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def request_frame(size: int) -> bytes:
    """The exec frame `Pool.exec` writes for that body (no context)."""
    return payload_frame(Payload(body_of(size))).encode()


def reply_frame(size: int) -> bytes:
    """The reply frame the SDK echo worker writes for it."""
    return payload_frame(Payload(b"OK:" + body_of(size))).encode()


def read_exact(fd: int, size: int) -> bytes:
    """Exactly `size` bytes from `fd`; EOFError when it closes first."""
    data = os.read(fd, size)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        if not data:
            raise EOFError
        data = os.read(fd, size - got)
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def read_frame(fd: int) -> bytes:
    """One whole frame: its header, then its options and payload (returned)."""
    first, _flags, length = _LEADING.unpack_from(read_exact(fd, HEADER_SIZE))
    return read_exact(fd, 4 * ((first & 0x0F) - 3) + length)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def pin(cpus: str) -> None:
    """Run on these CPUs (`1,2`); `-` leaves the placement to the kernel."""
    if cpus != "-":
        os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})


def echo(size: int, cpus: str) -> None:
    """The child: answer every frame on fd 0 with the reply frame on fd 1, until EOF."""
    pin(cpus)
    reply = reply_frame(size)
    while True:
        try:
            read_frame(0)
        except EOFError:
            return
        write_all(1, reply)


def parent(size: int, count: int, warmup: int, children: int, cpus: str) -> None:
    """Start the children, then time `count` round trips with them, one in flight each."""
    peers = [
        subprocess.Popen(
            [sys.executable, __file__, "echo", str(size), cpus],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        for _ in range(children)
    ]
    pipes = []
    for peer in peers:
        assert peer.stdin is not None and peer.stdout is not None
        pipes.append((peer.stdin.fileno(), peer.stdout.fileno()))
    request = request_frame(size)
    try:
        expected = reply_frame(size)[HEADER_SIZE:]
        for to_child, from_child in pipes:
            write_all(to_child, request)
            if read_frame(from_child) != expected:
                raise SystemExit("the floor's child answered something else")
        round_trips(pipes, request, warmup)
        print("ready", flush=True)
        sys.stdin.readline()
        start = time.monotonic_ns()
        latencies = round_trips(pipes, request, count)
        end = time.monotonic_ns()
    finally:
        for peer in peers:
            assert peer.stdin is not None
            peer.stdin.close()
        for peer in peers:
            peer.wait(timeout=10)
    print(json.dumps({"start_ns": start, "end_ns": end, "latencies_ns": latencies}), flush=True)


def round_trips(pipes: list[tuple[int, int]], request: bytes, count: int) -> list[int]:
    """`count` round trips in all, one in flight per child: each reply read (in turn, blocking)
    is followed at once by that child's next request."""
    clock = time.perf_counter_ns
    latencies: list[int] = []
    left = [count // len(pipes) + (index < count % len(pipes)) for index in range(len(pipes))]
    sent = [0] * len(pipes)
    for index, (to_child, _) in enumerate(pipes):
        if left[index]:
            sent[index] = clock()
            write_all(to_child, request)
    while any(left):
        for index, (to_child, from_child) in enumerate(pipes):
            if not left[index]:
                continue
            read_frame(from_child)
            latencies.append(clock() - sent[index])
            left[index] -= 1
            if left[index]:
                sent[index] = clock()
                write_all(to_child, request)
    return latencies


if __name__ == "__main__":
    role, numbers, cpus = sys.argv[1], [int(arg) for arg in sys.argv[2:-1]], sys.argv[-1]
    if role == "echo":
        echo(*numbers, cpus)
    else:
        parent(*numbers, cpus)
