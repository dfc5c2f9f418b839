"""Starting worker processes: through shoal's fork server against spawning a
fresh interpreter per worker, both doing the same start-up work (import the
worker code, attach to the store, say ready). This is the measurement behind
the runtime's use of a fork server.

  fork server   one interpreter imports the worker code once, then forks
                each worker (what shoal does; timed from init() until every
                worker has reported READY)
  spawn         N interpreters started at once, each importing and attaching

Usage: python bench/bench_startup.py [--workers 1 2 8 32] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

SPAWNED = """
import sys
import shoal.worker.main  # the worker code, as a forked worker has it
from shoal.store import ObjectStore
store = ObjectStore.attach(int(sys.argv[1]))
print("ready", flush=True)
sys.stdin.read()
"""


def fork_server(n: int) -> float:
    """Seconds from init() until all n workers are READY."""
    import shoal
    from shoal import objectref

    t = time.perf_counter()
    shoal.init(num_cpus=n, object_store_memory=256 << 20)
    shell = objectref.current().shell
    try:
        while True:
            with shell.lock:
                shell._drain()
                ready = sum(1 for w in shell.sched.workers.values() if w.state == "idle")
            if ready == n:
                return time.perf_counter() - t
            shell.sel.select(0.001)  # the I/O thread handles events; we only look
    finally:
        shoal.shutdown()


def spawn(n: int) -> float:
    from shoal.store import ObjectStore

    with ObjectStore.open(256 << 20) as store:
        t = time.perf_counter()
        procs = [
            subprocess.Popen([sys.executable, "-c", SPAWNED, str(store.fd)], pass_fds=[store.fd],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(n)
        ]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        elapsed = time.perf_counter() - t
        for p in procs:
            p.stdin.close()
            p.wait()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2, 8, 32])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for n in args.workers:
        f = statistics.median(fork_server(n) for _ in range(args.repeat))
        s = statistics.median(spawn(n) for _ in range(args.repeat))
        rows.append({"workers": n, "fork": f * 1e3, "spawn": s * 1e3, "ratio": s / f})
    print("Time until N workers are ready (ms)")
    print(h.table(rows, [("workers", "workers"), ("fork", "fork server"), ("spawn", "spawn"),
                         ("ratio", "spawn / fork")]))
    h.save("bench_startup", {"rows": rows}, args.json)


if __name__ == "__main__":
    main()
