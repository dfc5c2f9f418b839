"""What both anchor scripts measure, given a store's three operations:
create+seal of an object of `size` bytes (no payload copy), get of a
sealed object (zero copy where the store allows), and a put of a numpy
array's bytes (create, copy, seal), median latencies in microseconds and
put rates in GB/s. Stdlib and numpy only: it runs under every anchor's
interpreter."""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np


def iterations(size: int, quick: bool) -> int:
    n = max(5, min(2000, (256 << 20) // max(size, 1)))
    return max(3, n // 20) if quick else n


def measure(sizes: list[int], quick: bool, create_seal, get, put, delete) -> dict:
    """create_seal(size) -> key; get(key) -> buffer (released when dropped);
    put(array) -> key; delete(key)."""
    out = {}
    clock = time.perf_counter
    for size in sizes:
        n = iterations(size, quick)
        cs, gets = [], []
        for _ in range(n):
            t = clock()
            key = create_seal(size)
            cs.append(clock() - t)
            t = clock()
            buf = get(key)
            gets.append(clock() - t)
            del buf
            delete(key)
        row = {"create_seal_us": statistics.median(cs) * 1e6, "get_us": statistics.median(gets) * 1e6}
        if size >= 1 << 20:
            src = np.ones(size, dtype=np.uint8)
            puts = []
            for _ in range(max(3, min(20, n))):
                t = clock()
                key = put(src)
                puts.append(clock() - t)
                delete(key)
            row["put_gbps"] = size / statistics.median(puts) / 1e9
        out[size] = row
    return out


def main(run) -> None:
    """run(sizes, quick) -> rows; prints them as one JSON line."""
    sizes = [int(s) for s in sys.argv[1].split(",")]
    quick = len(sys.argv) > 2 and sys.argv[2] == "quick"
    print(json.dumps(run(sizes, quick)))
