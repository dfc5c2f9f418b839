"""A long mixed run that looks for leaks: tasks, actor calls, puts and gets
of random sizes up to 64 MB, and actors created and killed, at a steady
pace for --minutes; every --interval seconds it samples the driver's and
the workers' memory and open descriptors, the store's use and the sizes of
the scheduler's tables. It prints the curve and, for each measure, the
growth from the first minute to the last (goal: at most 5%), and writes
JSON.

    python bench/soak.py                  # 10 minutes: 1,000,000 tasks, 100,000 actor calls,
                                          # 100,000 puts and gets, 600 actors created and killed
    python bench/soak.py --minutes 2      # the same rates, for 2 minutes

Memory is read from /proc: "private" is resident memory minus shared pages
(the store's pages are shared by every process, and are counted once, in
the store's use).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20

#: Per 10 minutes, as the issue asks.
TARGETS = {"tasks": 1_000_000, "actor_calls": 100_000, "puts": 100_000, "actors": 600}
MAX_PUT = 64 * MiB
TASK_BATCH = 1000
CALL_BATCH = 200
GOAL = 0.05


def proc_memory(pid: int) -> tuple[int, int] | None:
    """(resident, private resident) bytes of a process, or None if gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            fields = f.read().split()
        resident, shared = int(fields[1]), int(fields[2])
        return resident * PAGE, (resident - shared) * PAGE
    except (OSError, ValueError, IndexError):
        return None


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def put_size(rng: random.Random) -> int:
    """Log-uniform from 1 byte to 64 MB: every size class is exercised, and
    the bytes copied stay within what two cores copy in the run."""
    return int(math.exp(rng.uniform(0, math.log(MAX_PUT))))


class Sampler:
    """Samples the runtime every `interval` seconds, between two batches of
    the workload (nothing of it in flight: what the tables hold then is what
    stays)."""

    def __init__(self, rt, interval: float, counts: dict):
        self.rt = rt
        self.interval = interval
        self.counts = counts
        self.samples: list[dict] = []
        self.t0 = time.monotonic()
        self.next_at = self.t0

    def maybe_sample(self) -> None:
        if time.monotonic() >= self.next_at:
            self.next_at += self.interval
            self.sample()

    def sample(self) -> None:
        rt = self.rt
        shell = rt.shell
        shell.sync()  # messages already sent, and refs already dropped, are applied first
        with shell.lock:
            actor_wids = set(shell.actors.by_wid)
            procs = [(wid, h.pid) for wid, h in shell.workers.items() if h.pid is not None]
            tables = {
                "sched_tasks": len(shell.sched.tasks),
                "sched_workers": len(shell.sched.workers),
                "sched_stats": len(shell.sched.stats),
                "sched_children": len(shell.sched.children),
                "ref_counts": len(shell.refs.count),
                "ref_contains": len(shell.refs.contains),
                "ref_task_args": len(shell.refs.task_args),
                "shared_ids": len(shell.shared),
                "by_task_id": len(shell.by_task_id),
                "actor_table": len(shell.actors.actors),
                "call_table": len(shell.calls),
                "handles": len(shell.workers),
                "exit_codes": len(getattr(shell, "exit_codes", ())),
            }
        tables["local_refs"] = len(rt.refs.counts)
        drv = proc_memory(os.getpid()) or (0, 0)
        pool_private = actor_private = pool_rss = 0
        worker_fds = 0
        for wid, pid in procs:
            m = proc_memory(pid)
            if m is None:
                continue
            if wid in actor_wids:
                actor_private += m[1]
            else:
                pool_private += m[1]
                pool_rss += m[0]
            worker_fds += open_fds(pid)
        stats = rt.store.statistics()
        self.samples.append({
            "t": time.monotonic() - self.t0,
            "driver_rss": drv[0], "driver_private": drv[1], "driver_fds": open_fds(os.getpid()),
            "pool_workers": len(procs) - len(actor_wids & {w for w, _ in procs}),
            "pool_private": pool_private, "pool_rss": pool_rss, "actor_private": actor_private,
            "live_actors": len(actor_wids), "worker_fds": worker_fds,
            "store_used": stats.bytes_in_use, "store_objects": stats.num_objects, "store_clients": stats.num_clients,
            **tables, **dict(self.counts),
        })


def workload(ray, minutes: float, seed: int, counts: dict, progress, sampler: Sampler) -> None:
    """Run the mix at a steady pace until every target (scaled to
    `minutes`) is met and the time is up."""
    import numpy as np

    rt = sampler.rt
    rng = random.Random(seed)
    scale = minutes / 10.0
    targets = {k: max(1, int(v * scale)) for k, v in TARGETS.items()}
    base = np.frombuffer(rng.randbytes(MAX_PUT), dtype=np.uint8)  # put values are slices of it

    @ray.remote
    def echo(x):
        return x

    @ray.remote
    def checksum(a):
        return int(a[:: 4096].sum()), len(a)

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def inc(self, k=1):
            self.n += k
            return self.n

    @ray.remote
    class Churn:
        def ping(self):
            return os.getpid()

    counters = [Counter.remote() for _ in range(2)]
    duration = minutes * 60
    t0 = time.monotonic()
    pause = threading.Event()  # never set: its timed wait paces the loop
    next_report = t0
    while True:
        elapsed = time.monotonic() - t0
        share = min(1.0, elapsed / duration)
        due = {k: int(targets[k] * share) - counts[k] for k in targets}
        if all(counts[k] >= targets[k] for k in targets) and elapsed >= duration:
            break
        if not any(v > 0 for v in due.values()):
            pause.wait(0.02)
            continue
        if due["tasks"] > 0:
            n = min(TASK_BATCH, due["tasks"])
            refs = [echo.remote(i) for i in range(n)]
            assert ray.get(refs) == list(range(n))
            del refs
            counts["tasks"] += n
        if due["actor_calls"] > 0:
            n = min(CALL_BATCH, due["actor_calls"])
            c = counters[counts["actor_calls"] // CALL_BATCH % len(counters)]
            before = ray.get(c.inc.remote(0))
            ray.get([c.inc.remote() for _ in range(n - 1)])
            assert ray.get(c.inc.remote(0)) == before + n - 1
            counts["actor_calls"] += n + 1
        for _ in range(min(20, max(0, due["puts"]))):
            size = put_size(rng)
            ref = ray.put(base[:size])
            value = ray.get(ref)
            assert len(value) == size and (size == 0 or value[size - 1] == base[size - 1])
            del value
            if counts["puts"] % 50 == 0:  # read in another process too
                assert ray.get(checksum.remote(ref))[1] == size
                counts["tasks"] += 1
            del ref
            counts["puts"] += 1
        if due["actors"] > 0:
            a = Churn.remote()
            ray.get(a.ping.remote())
            ray.kill(a)
            rt.wait_actor_gone(a._actor_id, 30)  # its process is gone before the next sample
            del a
            counts["actors"] += 1
        sampler.maybe_sample()
        now = time.monotonic()
        if now >= next_report:
            next_report = now + 30
            progress(elapsed, counts, targets)
    for c in counters:
        ray.kill(c)
    del counters


def growth(samples: list[dict], key: str, window: float) -> tuple[float, float, float | None]:
    """Mean of `key` over the first and the last `window` seconds, and the
    growth between them (None when the first is 0)."""
    start, end = samples[0]["t"], samples[-1]["t"]
    first = [s[key] for s in samples if s["t"] <= start + window]
    last = [s[key] for s in samples if s["t"] >= end - window]
    a, b = statistics.mean(first), statistics.mean(last)
    return a, b, ((b - a) / a if a else None)


CURVE = [("t", "t s"), ("driver_private_mb", "driver MB"), ("pool_private_mb", "workers MB"),
         ("driver_fds", "drv fds"), ("worker_fds", "wkr fds"), ("store_used_mb", "store MB"),
         ("store_objects", "objects"), ("ref_counts", "refs"), ("sched_tasks", "tasks"),
         ("actor_table", "actors tbl"), ("live_actors", "actors"), ("tasks", "tasks done"), ("puts", "puts")]

BYTES = {"driver_rss", "driver_private", "pool_private", "store_used"}
#: Shown, not judged: the driver's resident set counts the store's pages it
#: touched (shared memory, which the store's own use measures), so it grows
#: as puts reach store memory not used before, and stops at the store's size.
INFO = {"driver_rss"}
WATCHED = ["driver_rss", "driver_private", "pool_private", "driver_fds", "worker_fds", "store_used",
           "store_objects", "store_clients", "ref_counts", "ref_contains", "shared_ids", "local_refs", "sched_tasks",
           "sched_stats", "by_task_id", "actor_table", "call_table", "handles", "exit_codes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import shoal as ray
    from shoal import objectref

    ray.init(num_cpus=2)
    rt = objectref.current()
    counts = {k: 0 for k in TARGETS}
    sampler = Sampler(rt, args.interval, counts)

    def progress(elapsed, counts, targets):
        done = ", ".join(f"{k} {counts[k]:,}/{targets[k]:,}" for k in targets)
        print(f"[{elapsed:6.0f} s] {done}", flush=True)

    started = time.monotonic()
    workload(ray, args.minutes, args.seed, counts, progress, sampler)
    wall = time.monotonic() - started
    ray.shutdown()

    samples = sampler.samples
    for s in samples:
        for k in ("driver_private", "pool_private", "store_used"):
            s[k + "_mb"] = s[k] / MiB
    print(f"\nsoak: {args.minutes} min, {wall:.0f} s wall; " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    print("\nCurve (private = resident minus shared pages):")
    print(h.table(samples, CURVE))
    window = min(60.0, samples[-1]["t"] / 3)
    rows = []
    steady = samples[1:]  # the first sample is taken before any worker runs
    for key in WATCHED:
        a, b, g = growth(steady, key, window)
        # Counts of a few (objects, table entries) go up and down by one or
        # two with what a sample catches in passing: a slack of 2.
        ok = b <= a * (1 + GOAL) or (key not in BYTES and b <= a + 2)
        verdict = "info" if key in INFO else "yes" if ok else "NO"
        rows.append({"measure": key, "first": a, "last": b, "growth_pct": None if g is None else 100 * g,
                     "ok": verdict})
    print(f"\nGrowth, mean of the first {window:.0f} s against the last {window:.0f} s (goal <= {GOAL:.0%}):")
    print(h.table(rows, [("measure", "measure"), ("first", "first"), ("last", "last"),
                         ("growth_pct", "growth %"), ("ok", "ok")]))
    out = h.save("soak", {"minutes": args.minutes, "wall_s": wall, "counts": counts, "samples": samples,
                          "growth": rows, "window_s": window}, args.json)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
