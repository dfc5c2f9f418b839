"""The scheduler's decision cost as the pool grows: the pure state machine
(shoal.scheduler.state.Scheduler) alone, driven by simulated workers, with
no processes, sockets or store.

For each worker count W the machine has W CPUs and W workers; tasks of one
CPU are submitted ahead of the workers (a backlog of 2 W), and each
dispatched task is reported finished in dispatch order, which dispatches
the next. One task costs three decisions: its submit, its dispatch and its
finish. Two kinds of function are driven:

  long    each task reported as taking 10 ms: one task per worker at a time
  short   each task reported as taking 50 us: workers get tasks queued
          behind the running one (prefetch)

The baseline is the smallest worker count, in the same run: the last column
is each row's cost per task over the baseline's (flat: about 1.0).

Usage: python bench/bench_scheduler.py [--tasks 1000000] [--workers 2 16 64 256 1024]
       [--kinds long short] [--json PATH]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

from shoal.scheduler.state import Dispatch, Scheduler, StartWorker, Task, make_shape  # noqa: E402

DURATION_S = {"long": 0.010, "short": 50e-6}


def drive(workers: int, tasks: int, kind: str) -> dict:
    """Run `tasks` tasks through a scheduler of `workers` simulated workers;
    returns the seconds spent in the state machine and the counts."""
    sched = Scheduler({"CPU": workers}, target_workers=workers, max_workers=workers)
    shape = make_shape({"CPU": 1})
    duration = DURATION_S[kind]
    function_id = b"f" * 20
    running: collections.deque = collections.deque()  # (worker, seq), in dispatch order
    dispatched = 0

    def handle(actions: list) -> None:
        nonlocal dispatched
        for a in actions:
            if type(a) is Dispatch:
                running.append((a.worker, a.task.seq))
                dispatched += 1
            elif type(a) is StartWorker:
                handle(sched.worker_started(a.worker))

    handle(sched.start())
    backlog = 2 * workers
    submitted = finished = 0
    clock = time.perf_counter
    t0 = clock()
    while finished < tasks:
        while submitted < tasks and submitted - finished < backlog:
            submitted += 1
            handle(sched.submit(Task(submitted, submitted.to_bytes(8, "little"), function_id, shape)))
        wid, seq = running.popleft()
        handle(sched.task_finished(wid, seq, duration))
        finished += 1
    elapsed = clock() - t0
    assert dispatched == tasks and not sched.tasks, (dispatched, len(sched.tasks))
    return {"workers": workers, "kind": kind, "tasks": tasks, "seconds": elapsed,
            "decisions_per_s": 3 * tasks / elapsed, "us_per_task": elapsed / tasks * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=100_000, help="tasks per run (the figures in docs: 1000000)")
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 16, 64, 256, 1024])
    ap.add_argument("--kinds", nargs="+", default=["long", "short"], choices=sorted(DURATION_S))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    rows = []
    for kind in args.kinds:
        base = None
        for w in args.workers:
            r = drive(w, args.tasks, kind)
            base = base or r["us_per_task"]
            r["vs_baseline"] = r["us_per_task"] / base
            rows.append(r)
            print(f"  {kind:5} {w:5} workers: {r['decisions_per_s']:,.0f} decisions/s", file=sys.stderr)
    print(f"\nScheduler state machine, {args.tasks:,} tasks per row (3 decisions a task); "
          f"baseline: {args.workers[0]} workers\n")
    print(h.table(rows, [("kind", "tasks"), ("workers", "workers"), ("decisions_per_s", "decisions/s"),
                         ("us_per_task", "us/task"), ("vs_baseline", "x baseline")]))
    out = h.save("bench_scheduler", {"tasks": args.tasks, "rows": rows}, args.json)
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
