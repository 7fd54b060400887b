"""Frame codec throughput: rrd's encode and decode against bare struct + zlib.crc32.

Room: bench, run by hand, never by the tests: `.venv/bin/python bench/codec.py` from the repo.

For payloads of 16 B, 1 KiB, 64 KiB and 1 MiB (one option, as an exec frame carries), it
prints frames per second for
- encode: `frame.encode()` of a built frame, against `struct.pack` of the header,
  `zlib.crc32` of bytes 0-5 and one `b"".join`;
- new+encode: `Frame(payload, flags, options).encode()`, building the frame too (a frozen
  dataclass costs most of a small frame's time), against the same baseline;
- decode 1: `Decoder.feed` of one whole frame's bytes (one decoder, reused as a worker's is),
  against `struct.unpack_from` of the header, the CRC check, the option and a payload slice;
- decode N: `Decoder.feed` of one buffer holding many frames, against the same bare loop;
with a ratio column, rrd's rate over the baseline's (1.00 = as fast as bare struct).
Each figure is the best of a few repeats timed with `time.perf_counter`; the run takes
about half a minute.
"""

from __future__ import annotations

import struct
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rrd.protocol.frame import Decoder, Flag, Frame

SIZES = (("16 B", 16), ("1 KiB", 1024), ("64 KiB", 64 * 1024), ("1 MiB", 1024 * 1024))
REPEATS = 5
TARGET = 0.08  # seconds per repeat
STREAM_BYTES = 8 * 1024 * 1024
MAX_PAYLOAD = 2 * 1024 * 1024

_PREFIX = struct.Struct("<BBI")
_SUFFIX = struct.Struct("<IBB")
_HEADER = struct.Struct("<BBIIBBI")  # header plus its one option


def bare_encode(payload: bytes, context_size: int) -> bytes:
    """The least a Python encoder can do: pack, CRC, join."""
    prefix = _PREFIX.pack(0x14, 0, len(payload))
    return b"".join(
        (prefix, _SUFFIX.pack(zlib.crc32(prefix), 0, 0), struct.pack("<I", context_size), payload)
    )


def bare_decode(data: bytes) -> list[tuple[int, int, bytes]]:
    """The least a Python decoder can do: unpack, check the CRC, slice each frame out."""
    frames = []
    position = 0
    end = len(data)
    while position < end:
        first, flags, length, crc, _stream, _reserved, option = _HEADER.unpack_from(data, position)
        if zlib.crc32(data[position : position + 6]) != crc or first != 0x14:
            raise ValueError("bad frame")
        start = position + 16
        position = start + length
        frames.append((flags, option, data[start:position]))
    return frames


def rate(operation: Callable[[], object], frames_per_call: int) -> float:
    """Frames per second: calls scaled to about TARGET seconds, best of REPEATS."""
    calls = 1
    while True:
        started = time.perf_counter()
        for _ in range(calls):
            operation()
        elapsed = time.perf_counter() - started
        if elapsed >= TARGET / 8:
            break
        calls *= 4
    calls = max(1, int(calls * TARGET / elapsed))
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(calls):
            operation()
        best = min(best, time.perf_counter() - started)
    return calls * frames_per_call / best


def measure(size: int) -> list[tuple[str, float, float]]:
    """(operation, rrd rate, baseline rate) for one payload size."""
    context = b'{"lastTick":0}'
    payload = context + bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    payload = payload[:size]
    options = (min(len(context), size),)
    frame = Frame(payload, Flag.NONE, options)
    wire = frame.encode()
    assert wire == bare_encode(payload, options[0])
    count = max(8, min(10_000, STREAM_BYTES // size))
    stream = wire * count
    decoder = Decoder(max_payload=MAX_PAYLOAD)
    assert decoder.feed(stream)[-1] == frame and len(bare_decode(stream)) == count

    def new_encode() -> bytes:
        return Frame(payload, Flag.NONE, options).encode()

    baseline = rate(lambda: bare_encode(payload, options[0]), 1)
    return [
        ("encode", rate(frame.encode, 1), baseline),
        ("new+encode", rate(new_encode, 1), baseline),
        ("decode 1", rate(lambda: decoder.feed(wire), 1), rate(lambda: bare_decode(wire), 1)),
        (
            f"decode {count}",
            rate(lambda: decoder.feed(stream), count),
            rate(lambda: bare_decode(stream), count),
        ),
    ]


def human(value: float) -> str:
    """A rate in three significant figures with a k/M suffix."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def main() -> None:
    """Measure every size and print the table."""
    print(f"python {sys.version.split()[0]}; frames/s, best of {REPEATS}")
    head = ("payload", "operation", "rrd", "baseline", "ratio")
    row = "{:>8}  {:<13}  {:>9}  {:>9}  {:>6}"
    print(row.format(*head))
    print(row.format(*("-" * len(h) for h in head)))
    for label, size in SIZES:
        for operation, ours, bare in measure(size):
            print(row.format(label, operation, human(ours), human(bare), f"{ours / bare:.2f}"))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
