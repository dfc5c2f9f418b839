"""Dask, joblib and concurrent.futures on shoal, beside each library's own
choices and Ray's integrations, all peers in one run.

    python bench/bench_integrations.py            # full sizes (several minutes)
    python bench/bench_integrations.py --quick    # tiny sizes (a smoke test)

Each (workload, peer) runs in a fresh process, one after the other, with 2
workers (or threads) for every peer: a warm-up run, then --repeat timed
runs; the table shows the median of the timed runs, in seconds, and each
peer's time as a multiple of shoal's. Setup (starting a runtime or a
cluster, making the input arrays) is not timed. Ray peers need the bench
extra (pip install ".[bench]"): ray_dask_get and register_ray.

Workloads:
  dask_array   (x + x.T).mean(axis=0), x random N x N in C x C chunks (made by tasks)
  dask_gil     a pure-Python function over the 64 chunks of an array (map_blocks)
  joblib_tiny  10,000 calls of a tiny function (Parallel, n_jobs=2)
  joblib_large 16 calls, each given one 400 MB array
  exec_tiny    10,000 submit()s of a tiny function, then wait()
  exec_large   map() over 8 arrays of 100 MB
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import save, table  # noqa: E402

WORKERS = 2

PEERS = {
    "dask_array": ["shoal", "threads", "processes", "distributed", "ray"],
    "dask_gil": ["shoal", "threads", "processes", "distributed", "ray"],
    "joblib_tiny": ["shoal", "loky", "ray"],
    "joblib_large": ["shoal", "loky", "ray"],
    "exec_tiny": ["shoal", "process_pool"],
    "exec_large": ["shoal", "process_pool"],
}

#: The issue's goals: (peer, shoal's time at most this multiple of the peer's).
GOALS = {
    "dask_array": [("threads", 1.2), ("processes", 0.5), ("distributed", 0.5), ("ray", 0.5)],
    "dask_gil": [("threads", 1 / 1.5), ("processes", 0.5), ("distributed", 0.5), ("ray", 0.5)],
    "joblib_tiny": [("loky", 1.0)],
    "joblib_large": [("loky", 0.5)],
    "exec_tiny": [("process_pool", 1.0)],
    "exec_large": [("process_pool", 1.0)],
}


def sizes(quick: bool) -> dict:
    if quick:
        return {"n": 2000, "chunk": 500, "gil_chunk": 2_000, "tiny": 500, "large_mb": 40, "exec_mb": 10}
    return {"n": 16_000, "chunk": 2_000, "gil_chunk": 400_000, "tiny": 10_000, "large_mb": 400, "exec_mb": 100}


# -- the workloads (run in the measuring process) ------------------------------------------


def py_chunk(block):
    """GIL-bound work on one chunk: a Python loop over its values."""
    return block.dtype.type(sum(math.sin(v) ** 2 for v in block.tolist()))[None]


def inc(x):
    return x + 1


def total(a):
    return float(a.sum())


def dask_setup(peer: str):
    """A get function for dask.compute, and what to close afterwards."""
    import dask

    if peer == "shoal":
        import shoal
        from shoal.util.dask import shoal_dask_get

        shoal.init(num_cpus=WORKERS)
        return shoal_dask_get, shoal.shutdown
    if peer == "ray":
        import ray
        from ray.util.dask import ray_dask_get

        ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
        return ray_dask_get, ray.shutdown
    if peer == "distributed":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        return client.get, lambda: (client.close(), cluster.close())
    dask.config.set(num_workers=WORKERS)
    return peer, (lambda: None)  # "threads" or "processes"


def dask_job(case: str, s: dict):
    import dask.array as da

    if case == "dask_array":
        x = da.random.random((s["n"], s["n"]), chunks=(s["chunk"], s["chunk"]))
        return (x + x.T).mean(axis=0)
    x = da.arange(64 * s["gil_chunk"], chunks=s["gil_chunk"], dtype="float64")
    return x.map_blocks(py_chunk, chunks=(1,), dtype="float64").sum()


def run_dask(case: str, peer: str, s: dict, repeat: int) -> list[float]:
    import dask

    get, close = dask_setup(peer)
    try:
        times = []
        for _ in range(repeat + 1):
            job = dask_job(case, s)
            t = time.perf_counter()
            dask.compute(job, scheduler=get)
            times.append(time.perf_counter() - t)
        return times
    finally:
        close()


def run_joblib(case: str, peer: str, s: dict, repeat: int) -> list[float]:
    import joblib
    import numpy as np

    close = lambda: None  # noqa: E731
    if peer == "shoal":
        import shoal
        from shoal.util.joblib import register_shoal

        shoal.init(num_cpus=WORKERS)
        register_shoal()
        close = shoal.shutdown
    elif peer == "ray":
        import ray
        from ray.util.joblib import register_ray

        ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
        register_ray()
        close = ray.shutdown
    big = np.ones(s["large_mb"] * 125_000) if case == "joblib_large" else None
    try:
        times = []
        with joblib.parallel_backend(peer, n_jobs=WORKERS):
            for _ in range(repeat + 1):
                t = time.perf_counter()
                if case == "joblib_tiny":
                    joblib.Parallel()(joblib.delayed(inc)(i) for i in range(s["tiny"]))
                else:
                    joblib.Parallel()(joblib.delayed(total)(big) for _ in range(16))
                times.append(time.perf_counter() - t)
        return times
    finally:
        close()


def run_executor(case: str, peer: str, s: dict, repeat: int) -> list[float]:
    import concurrent.futures as cf

    import numpy as np

    if peer == "shoal":
        import shoal

        shoal.init(num_cpus=WORKERS)
        ex = shoal.util.Executor(WORKERS)
        close = lambda: (ex.shutdown(), shoal.shutdown())  # noqa: E731
    else:
        ex = cf.ProcessPoolExecutor(WORKERS)
        close = ex.shutdown
    arrays = [np.full(s["exec_mb"] * 125_000, i, dtype=np.float64) for i in range(8)] if case == "exec_large" else []
    try:
        times = []
        for _ in range(repeat + 1):
            t = time.perf_counter()
            if case == "exec_tiny":
                cf.wait([ex.submit(inc, i) for i in range(s["tiny"])])
            else:
                list(ex.map(total, arrays))
            times.append(time.perf_counter() - t)
        return times
    finally:
        close()


def measure(case: str, peer: str, quick: bool, repeat: int) -> dict:
    s = sizes(quick)
    runner = run_dask if case.startswith("dask") else run_joblib if case.startswith("joblib") else run_executor
    times = runner(case, peer, s, repeat)
    return {"first": times[0], "times": times[1:], "median": statistics.median(times[1:])}


# -- the driver ------------------------------------------------------------------------------------


def available(peer: str) -> bool:
    modules = {"ray": "ray", "distributed": "distributed"}
    if peer not in modules:
        return True
    try:
        __import__(modules[peer])
        return True
    except ImportError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per peer, after a warm-up")
    ap.add_argument("--only", nargs="*", default=None, help="workloads to run (default: all)")
    ap.add_argument("--json", default=None, help="where to write the results")
    ap.add_argument("--one", nargs=2, metavar=("CASE", "PEER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.quick, args.repeat)))
        return
    load_before = os.getloadavg()
    rows, raw = [], {}
    for case in args.only or list(PEERS):
        row = {"workload": case}
        for peer in PEERS[case]:
            if not available(peer):
                continue
            cmd = [sys.executable, __file__, "--one", case, peer, "--repeat", str(args.repeat)]
            if args.quick:
                cmd.append("--quick")
            out = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if out.returncode != 0 or not lines:
                sys.stderr.write(f"{case}/{peer} failed:\n{out.stderr[-2000:]}\n")
                continue
            result = json.loads(lines[-1])
            raw[f"{case}/{peer}"] = result
            row[peer] = result["median"]
            print(f"{case:13s} {peer:12s} median {result['median']:.3f} s (first {result['first']:.3f} s)",
                  flush=True)
        misses = []
        for peer, limit in GOALS.get(case, []):
            if peer in row and "shoal" in row:
                ratio = row["shoal"] / row[peer]
                if ratio > limit:
                    misses.append(f"{peer} ({ratio:.2f}x of it, goal <= {limit:.2f}x)")
        row["misses"] = "; ".join(misses) or "none"
        rows.append(row)
    peers = ["shoal", "threads", "processes", "distributed", "loky", "process_pool", "ray"]
    print()
    print(table(rows, [("workload", "workload")] + [(p, p + " (s)") for p in peers] + [("misses", "goal missed vs")]))
    load_after = os.getloadavg()
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)")
    path = save("integrations", {"rows": rows, "raw": raw, "load": [load_before, load_after]}, args.json)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
