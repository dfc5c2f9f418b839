"""Task and object benchmarks under `ray microbenchmark`'s names, with Ray
and multiprocessing.Pool running the same workloads in the same invocation.

  single_client_tasks_sync            submit one no-op task, get it; repeat   (tasks/s)
  single_client_tasks_async           submit 10k no-op tasks, then get them   (tasks/s)
  single_client_tasks_and_get_batch   submit 1k tasks and get them, repeat    (batches/s)
  single_client_put_calls             put(0)                                   (calls/s)
  single_client_get_calls             get of a put(0)                          (calls/s)
  single_client_put_gigabytes         put of an 800 MB int64 array             (GB/s)
  single_client_wait_1k_refs          wait() one at a time through 1k refs     (rounds/s)
  single_client_get_object_containing_10k_refs                                 (gets/s)
  init_to_first_result                fresh process: init() and one task       (s)
  seed_matmul_dag                     two 1000x1000 matrices, one product      (s)
  array_800mb_{cold,warm}_s           800 MB array put once, 8 tasks sum it    (s; fresh / warm store)
  array_800mb_direct_*                the array passed to each of the 8 calls
  array_800mb*_peak_pss_gb            peak PSS of the process tree            (GB)

What seeing inside costs (shoal only; alternated round by round in one run):
  tasks_async_timeline_{off,on}       single_client_tasks_async with task events off / on (the default)
  tasks_async_{no_poller,status_poller_100ms}
                                      the same with another process asking the
                                      control endpoint for `status` every 100 ms, or not

The floor of each row (bench/_floors.py, measured first in the same run) and
how close shoal comes to it ('of floor': 1.0 at the floor) stand beside it.

Usage: python bench/bench_tasks.py [--quick] [--no-ray] [--no-pool] [--no-floor] [--observability-only]
                                   [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _floors  # noqa: E402
import _harness as h  # noqa: E402

GOALS = {
    "single_client_tasks_sync": ">= 83,000/s (<= 12 us)",
    "single_client_tasks_async": ">= 120,000/s",
    "single_client_put_calls": ">= 100,000/s",
    "single_client_get_calls": ">= 200,000/s",
    "single_client_put_gigabytes": ">= 0.9 x floor",
    "init_to_first_result": "<= 0.05 s",
    "import_s": "<= 0.03 s",
    "seed_matmul_dag": "<= 0.06 s",
    "array_800mb_cold_s": "<= 0.35 s",
    "array_800mb_warm_s": "<= 0.5 s",
    "array_800mb_peak_pss_gb": "<= 1.8 GB",
    "array_800mb_direct_cold_s": "<= ray",
}

UNITS = {
    "single_client_put_gigabytes": "GB/s",
    "init_to_first_result": "s",
    "seed_matmul_dag": "s",
    "array_800mb_cold_s": "s",
    "array_800mb_warm_s": "s",
    "array_800mb_direct_cold_s": "s",
    "array_800mb_direct_warm_s": "s",
    "array_800mb_peak_pss_gb": "GB",
    "array_800mb_direct_peak_pss_gb": "GB",
}


class PeakPSS(threading.Thread):
    """Samples the PSS of this process and all its descendants (shared
    memory counted once, split among its users)."""

    def __init__(self, interval: float = 0.01):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self._halt.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak = max(self.peak, total)
            self._halt.wait(self.interval)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return self.peak / 1e9


def best_rate(fn, n: int, repeat: int) -> float:
    return h.rate(fn, n, repeat)


# ---------------------------------------------------------------------------
# The workloads, for any module with Ray's API (shoal or ray)
# ---------------------------------------------------------------------------


def core_suite(ray, quick: bool) -> dict:
    out = {}

    @ray.remote
    def noop():
        return 0

    @ray.remote
    def create_object_containing_ref():
        return [ray.put(1) for _ in range(10000)]

    ray.get([noop.remote() for _ in range(200)])  # warm up the workers

    def sync(n):
        for _ in range(n):
            ray.get(noop.remote())

    out["single_client_tasks_sync"] = best_rate(sync, 300 if quick else 3000, 3)

    def asynchronous(n):
        ray.get([noop.remote() for _ in range(n)])

    out["single_client_tasks_async"] = best_rate(asynchronous, 1000 if quick else 10000, 3)

    def batches(n):
        for _ in range(n):
            ray.get([noop.remote() for _ in range(1000)])

    out["single_client_tasks_and_get_batch"] = best_rate(batches, 2 if quick else 10, 3)

    def puts(n):
        for _ in range(n):
            ray.put(0)

    out["single_client_put_calls"] = best_rate(puts, 2000 if quick else 20000, 3)
    ref = ray.put(0)

    def gets(n):
        for _ in range(n):
            ray.get(ref)

    out["single_client_get_calls"] = best_rate(gets, 2000 if quick else 50000, 3)
    arr = np.ones(100 * 1024 * 1024 // (8 if quick else 1), dtype=np.int64)  # Ray uses zeros, whose pages are never read
    times = []
    for _ in range(3 if quick else 5):
        t = time.perf_counter()
        r = ray.put(arr)
        times.append(time.perf_counter() - t)
        del r
        gc.collect()
    out["single_client_put_gigabytes"] = arr.nbytes / statistics.median(times) / 1e9
    del arr

    def wait_1k(n):
        for _ in range(n):
            not_ready = [noop.remote() for _ in range(1000)]
            while not_ready:
                _, not_ready = ray.wait(not_ready)

    out["single_client_wait_1k_refs"] = best_rate(wait_1k, 1 if quick else 3, 2)

    def containing(n):
        for _ in range(n):
            ray.get(create_object_containing_ref.remote())

    out["single_client_get_object_containing_10k_refs"] = best_rate(containing, 1 if quick else 5, 2)
    out.update(matmul(ray))
    return out


def matmul(ray) -> dict:
    @ray.remote
    def create_matrix(size):
        return np.random.normal(size=size)

    @ray.remote
    def multiply_matrices(x, y):
        return np.dot(x, y)

    times = []
    for _ in range(5):
        t = time.perf_counter()
        x = create_matrix.remote([1000, 1000])
        y = create_matrix.remote([1000, 1000])
        ray.get(multiply_matrices.remote(x, y))
        times.append(time.perf_counter() - t)
    return {"seed_matmul_dag": statistics.median(times[1:])}  # the first run warms numpy up


def big_array(ray, quick: bool, direct: bool) -> dict:
    """One 800 MB float64 array, 8 tasks that each return its sum: put once
    and pass the ref (or pass the array itself to each call, `direct`).
    Timed in a fresh runtime (the store's pages are cold), then again in the
    same runtime (warm); peak PSS of the process tree is sampled in a third
    run, apart, because sampling PSS costs a core."""

    @ray.remote
    def total(a):
        return float(a.sum())

    n = 100_000_000 // (16 if quick else 1)
    arr = np.ones(n)

    def run():
        if direct:
            return ray.get([total.remote(arr) for _ in range(8)])
        ref = ray.put(arr)
        return ray.get([total.remote(ref) for _ in range(8)])

    out = {}
    suffix = "_direct" if direct else ""
    for label in ("cold", "warm", "memory"):
        gc.collect()
        sampler = PeakPSS(0.05) if label == "memory" else None
        if sampler:
            sampler.start()
        t = time.perf_counter()
        sums = run()
        elapsed = time.perf_counter() - t
        assert sums == [float(n)] * 8
        if sampler:
            out[f"array_800mb{suffix}_peak_pss_gb"] = sampler.stop()
        else:
            out[f"array_800mb{suffix}_{label}_s"] = elapsed
        del sums
    return out


def run_suite(name: str, quick: bool, num_cpus: int) -> dict:
    if name == "shoal":
        import shoal as ray
    else:
        import ray  # type: ignore
    kwargs = {"num_cpus": num_cpus}
    if name == "ray":
        kwargs.update(include_dashboard=False, logging_level="ERROR")
    ray.init(**kwargs)
    try:
        out = core_suite(ray, quick)
    finally:
        ray.shutdown()
    for direct in (False, True):
        ray.init(**kwargs)
        try:
            out.update(big_array(ray, quick, direct))
        finally:
            ray.shutdown()
        gc.collect()
    return out


# ---------------------------------------------------------------------------
# multiprocessing.Pool, where the workload fits it
# ---------------------------------------------------------------------------


def _noop(_=None):
    return 0


def _total(a):
    return float(a.sum())


def pool_suite(quick: bool, num_cpus: int) -> dict:
    out = {}
    with multiprocessing.get_context("fork").Pool(num_cpus) as pool:
        pool.map(_noop, range(100))

        def sync(n):
            for _ in range(n):
                pool.apply(_noop)

        out["single_client_tasks_sync"] = best_rate(sync, 300 if quick else 3000, 3)

        def asynchronous(n):
            rs = [pool.apply_async(_noop) for _ in range(n)]
            for r in rs:
                r.get()

        out["single_client_tasks_async"] = best_rate(asynchronous, 1000 if quick else 10000, 3)

        def batches(n):
            for _ in range(n):
                rs = [pool.apply_async(_noop) for _ in range(1000)]
                for r in rs:
                    r.get()

        out["single_client_tasks_and_get_batch"] = best_rate(batches, 2 if quick else 10, 3)
        n = 100_000_000 // (16 if quick else 1)
        arr = np.ones(n)
        t = time.perf_counter()
        sums = pool.map(_total, [arr] * 8, chunksize=1)
        out["array_800mb_direct_cold_s"] = time.perf_counter() - t
        sampler = PeakPSS(0.05)
        sampler.start()
        sums = pool.map(_total, [arr] * 8, chunksize=1)
        out["array_800mb_direct_peak_pss_gb"] = sampler.stop()
        assert sums == [float(n)] * 8
    return out


# ---------------------------------------------------------------------------
# Start-up, measured in fresh processes
# ---------------------------------------------------------------------------

STARTUP = {
    "shoal": """
        import time; t0 = time.perf_counter()
        import shoal as ray
        t1 = time.perf_counter(); ray.init(num_cpus={n})
        @ray.remote
        def f(): return 1
        ray.get(f.remote()); t2 = time.perf_counter()
        ray.shutdown(); t3 = time.perf_counter()
        print(t1 - t0, t2 - t1, t3 - t2)
    """,
    "ray": """
        import time; t0 = time.perf_counter()
        import ray
        t1 = time.perf_counter(); ray.init(num_cpus={n}, include_dashboard=False, logging_level="ERROR")
        @ray.remote
        def f(): return 1
        ray.get(f.remote()); t2 = time.perf_counter()
        ray.shutdown(); t3 = time.perf_counter()
        print(t1 - t0, t2 - t1, t3 - t2)
    """,
    "pool": """
        import time; t0 = time.perf_counter()
        import multiprocessing
        t1 = time.perf_counter(); pool = multiprocessing.get_context("fork").Pool({n})
        print_ = pool.apply(abs, (-1,)); t2 = time.perf_counter()
        pool.terminate(); pool.join(); t3 = time.perf_counter()
        print(t1 - t0, t2 - t1, t3 - t2)
    """,
}


def startup(name: str, num_cpus: int, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        code = textwrap.dedent(STARTUP[name].format(n=num_cpus))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} start-up run failed:\n{proc.stderr}")
        runs.append([float(x) for x in proc.stdout.split()[-3:]])
    imp, first, stop = (statistics.median(col) for col in zip(*runs))
    return {"import_s": imp, "init_to_first_result": first, "shutdown_s": stop}


# ---------------------------------------------------------------------------
# What the timeline and the control endpoint cost
# ---------------------------------------------------------------------------

POLLER = """
import sys, time
from shoal.control import endpoint
c = endpoint.Client(endpoint.choose(int(sys.argv[1])))
c.ask("status")
print("polling", flush=True)
while True:
    t = time.monotonic()
    c.ask("status")
    time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))
"""


def _async_rate(ray, n: int) -> float:
    @ray.remote
    def noop():
        return 0

    ray.get([noop.remote() for _ in range(200)])

    def asynchronous(k):
        ray.get([noop.remote() for _ in range(k)])

    return best_rate(asynchronous, n, 3)


def observability(quick: bool, num_cpus: int) -> dict:
    """single_client_tasks_async with the timeline off and on, and with a
    status poller or none: modes alternate round by round (the machine's
    drift hits both alike); the median round of each is reported."""
    import shoal as ray

    n, rounds = (1000, 2) if quick else (20000, 15)
    rates: dict[str, list[float]] = {k: [] for k in ("timeline_off", "timeline_on", "no_poller",
                                                     "status_poller_100ms")}
    for r in range(rounds):
        for events in (("0", "timeline_off"), (None, "timeline_on"))[:: 1 if r % 2 else -1]:
            value, key = events
            if value is None:
                os.environ.pop("SHOAL_TASK_EVENTS", None)
            else:
                os.environ["SHOAL_TASK_EVENTS"] = value
            ray.init(num_cpus=num_cpus)
            try:
                rates[key].append(_async_rate(ray, n))
            finally:
                ray.shutdown()
                os.environ.pop("SHOAL_TASK_EVENTS", None)
    ray.init(num_cpus=num_cpus)
    try:
        for r in range(rounds):
            for polled in (False, True)[:: 1 if r % 2 else -1]:
                poller = None
                if polled:
                    poller = subprocess.Popen([sys.executable, "-c", POLLER, str(os.getpid())],
                                              stdout=subprocess.PIPE, text=True)
                    if poller.stdout.readline().strip() != "polling":
                        raise RuntimeError("the status poller did not start")
                try:
                    rates["status_poller_100ms" if polled else "no_poller"].append(_async_rate(ray, n))
                finally:
                    if poller is not None:
                        poller.kill()
                        poller.wait()
    finally:
        ray.shutdown()
    return {f"tasks_async_{k}": statistics.median(v) for k, v in rates.items()}


def have_ray() -> bool:
    try:
        import ray  # noqa: F401

        return True
    except ImportError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats (smoke test)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--no-pool", action="store_true")
    ap.add_argument("--no-floor", action="store_true", help="skip measuring the floors")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--observability-only", action="store_true",
                    help="only what the timeline and a status poller cost")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.observability_only:
        obs = observability(args.quick, args.num_cpus)
        rows = [{"name": k, "unit": "/s", "shoal": v} for k, v in obs.items()]
        for a, b, label in (("timeline_on", "timeline_off", "timeline on / off"),
                            ("status_poller_100ms", "no_poller", "poller / none")):
            rows.append({"name": label, "unit": "ratio",
                         "shoal": f"{obs[f'tasks_async_{a}'] / obs[f'tasks_async_{b}']:.3f}"})
        print(h.table(rows, [("name", "benchmark"), ("unit", "unit"), ("shoal", "shoal")]))
        print(f"\nJSON: {h.save('bench_tasks_observability', {'results': obs, 'rows': rows}, args.json)}")
        return
    peers = ["shoal"] + (["ray"] if not args.no_ray and have_ray() else [])
    results: dict = {}
    floors = {} if args.no_floor else _floors.measure(args.quick)
    row_floors = _floors.row_floors(floors, args.num_cpus, 800e6 / (16 if args.quick else 1)) if floors else {}
    for name in peers:
        results[name] = startup(name, args.num_cpus, 1 if args.quick else 3)
        results[name].update(run_suite(name, args.quick, args.num_cpus))
    results["shoal"].update(observability(args.quick, args.num_cpus))
    if not args.no_pool:
        results["pool"] = startup("pool", args.num_cpus, 1 if args.quick else 3)
        results["pool"].update(pool_suite(args.quick, args.num_cpus))
    names = [k for k in results["shoal"] if k not in ("import_s", "shutdown_s")]
    names += ["import_s", "shutdown_s"]
    rows = []
    for k in names:
        s, r, p = (results.get(x, {}).get(k) for x in ("shoal", "ray", "pool"))
        lower_better = UNITS.get(k) in ("s", "GB") or k.endswith("_s")
        ratio = None
        if s and r:
            ratio = r / s if lower_better else s / r
        floor, how = row_floors.get(k, (None, None))
        rows.append({"name": k, "unit": UNITS.get(k, "s" if k.endswith("_s") else "/s"), "shoal": s,
                     "floor": floor, "of floor": _floors.of_floor(k, s, floor), "ray": r, "x ray": ratio,
                     "pool": p, "goal": GOALS.get(k, ""), "floor_how": how})
    print(f"Tasks and objects, {args.num_cpus} CPUs ('x ray': how many times better than Ray; "
          "'of floor': 1.0 at the floor)")
    print(h.table(rows, [("name", "benchmark"), ("unit", "unit"), ("shoal", "shoal"), ("floor", "floor"),
                         ("of floor", "of floor"), ("ray", "ray 2.60"), ("x ray", "x ray"), ("pool", "mp.Pool"),
                         ("goal", "goal")]))
    if floors:
        print("\nFloors measured in this run: " + ", ".join(f"{k} {v:,.2f}" for k, v in floors.items()))
        for key in sorted({r["floor_how"] for r in rows if r["floor_how"]}):
            print(f"  {key}: {_floors.FLOOR_NOTES[key]}")
    path = h.save("bench_tasks", {"results": results, "floors": floors, "rows": rows}, args.json)
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
