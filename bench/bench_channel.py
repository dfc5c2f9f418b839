"""Round trip between two Python processes over each transport the runtime
could use: the shared-memory ring (sleeping on an eventfd, or spinning
briefly first), a Unix socket pair and a pair of pipes. This is the
measurement behind the runtime's choice of channel.

Usage: python bench/bench_channel.py [--n 20000] [--json PATH]
"""

from __future__ import annotations

import argparse
import mmap
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

from shoal._channel import Ring, footprint  # noqa: E402

CAP = 1 << 16


def ring_pair(mem):
    return Ring(mem, 0, CAP, init=True), Ring(mem, footprint(CAP), CAP, init=True)


def bench_ring(n: int, spin: float) -> list[float]:
    fd = os.memfd_create("bench-ring")
    os.ftruncate(fd, 2 * footprint(CAP))
    mem = mmap.mmap(fd, 2 * footprint(CAP))
    ping, pong = ring_pair(mem)
    a_fd = os.eventfd(0, os.EFD_NONBLOCK)
    b_fd = os.eventfd(0, os.EFD_NONBLOCK)
    pid = os.fork()
    if pid == 0:
        try:
            while True:
                ping.wait_readable(b_fd, spin)
                msg = ping.recv()
                pong.send(msg, a_fd)
                if msg == b"stop":
                    break
        finally:
            os._exit(0)
    times = []
    msg = b"x" * 64
    for _ in range(n):
        t = time.perf_counter()
        ping.send(msg, b_fd)
        pong.wait_readable(a_fd, spin)
        pong.recv()
        times.append(time.perf_counter() - t)
    ping.send(b"stop", b_fd)
    os.waitpid(pid, 0)
    return times


def bench_stream(n: int, kind: str) -> list[float]:
    if kind == "socket":
        a, b = socket.socketpair()
        a_r = a_w = a.fileno()
        b_r = b_w = b.fileno()
    else:
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        a_r, a_w, b_r, b_w = r2, w1, r1, w2
    pid = os.fork()
    if pid == 0:
        try:
            while True:
                msg = os.read(b_r, 4096)
                os.write(b_w, msg)
                if msg == b"stop":
                    break
        finally:
            os._exit(0)
    times = []
    msg = b"x" * 64
    for _ in range(n):
        t = time.perf_counter()
        os.write(a_w, msg)
        os.read(a_r, 4096)
        times.append(time.perf_counter() - t)
    os.write(a_w, b"stop")
    os.waitpid(pid, 0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--json")
    args = ap.parse_args()
    results = {
        "ring, sleep on eventfd": bench_ring(args.n, 0.0),
        "ring, spin 20 us then sleep": bench_ring(args.n, 20e-6),
        "ring, spin 100 us then sleep": bench_ring(args.n, 100e-6),
        "unix socket pair": bench_stream(args.n, "socket"),
        "pipe pair": bench_stream(args.n, "pipe"),
    }
    rows = [{"transport": k, **h.summarize(v)} for k, v in results.items()]
    print("Round trip of a 64-byte message between two Python processes (us)")
    print(h.table(rows, [("transport", "transport"), ("median_us", "p50"), ("p99_us", "p99")]))
    h.save("bench_channel", {"rows": rows}, args.json)


if __name__ == "__main__":
    main()
