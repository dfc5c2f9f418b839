"""Object store microbenchmarks, with their baselines measured in the same run.

For each size from 8 B to 1 GiB:
  create+seal   allocate an object and publish it (no payload copy), then
                release the creator's pin (release column)
  get           pin a sealed object and map it to a buffer (zero copy)
  put GB/s      value -> store: serialize, create, copy, seal; "warm" reuses
                freed memory, "cold" lands in a fresh store's untouched pages
Baselines:
  memcpy        numpy copy into warm shared memory (one thread), and the
                store's own parallel copy into the same memory
  mp.shm        multiprocessing.shared_memory: create+write a segment of that
                size, and attach+map an existing one (the stdlib way)
  ray           ray.put / ray.get of the same array, when Ray is importable
  plasma        Plasma (pyarrow 11.0's plasma_store), given --plasma-python
  vineyard      vineyard (vineyardd), given --vineyard-python
                (create+seal, get and put of raw bytes in each, each store in
                its own interpreter and process, --rounds times; see
                bench/anchors/README.md for making those interpreters)

Usage: python bench/bench_store.py [--quick] [--json PATH] [--no-ray]
           [--plasma-python PATH] [--vineyard-python PATH] [--rounds N]
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import statistics
import subprocess
import sys
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

from shoal._store._core import parallel_copy  # noqa: E402
from shoal.store import ObjectStore  # noqa: E402

SIZES = [8, 1 << 10, 64 << 10, 1 << 20, 8 << 20, 64 << 20, 1 << 30]
QUICK_SIZES = [8, 1 << 10, 1 << 20, 16 << 20]


def iterations(size: int, quick: bool) -> int:
    n = max(5, min(20_000, (512 << 20) // max(size, 1)))
    return max(3, n // 20) if quick else n


def bench_lifecycle(store: ObjectStore, size: int, n: int) -> dict:
    """Latencies of create+seal, get and release; objects are made in
    batches that fit the store, then deleted."""
    raw = store.raw
    batch = max(1, min(n, (store.statistics().capacity_bytes // 3) // max(size, 64)))
    create_seal, release_w, get, release_r = [], [], [], []
    clock = time.perf_counter
    done = 0
    while done < n:
        ids = [os.urandom(20) for _ in range(min(batch, n - done))]
        done += len(ids)
        for oid in ids:
            t0 = clock()
            w = raw.create(oid, size)
            w.seal()
            t1 = clock()
            w.release()
            t2 = clock()
            create_seal.append(t1 - t0)
            release_w.append(t2 - t1)
        for oid in ids:
            t0 = clock()
            b = raw.get(oid)
            t1 = clock()
            b.release()
            t2 = clock()
            get.append(t1 - t0)
            release_r.append(t2 - t1)
        for oid in ids:
            raw.delete(oid)
    return {
        "create_seal": h.summarize(create_seal),
        "release": h.summarize(release_w + release_r),
        "get": h.summarize(get),
    }


def bench_put_warm(store: ObjectStore, src: np.ndarray, n: int) -> float:
    """GB/s of put into memory freed by the previous put (warm pages)."""
    first = store.put(src)  # fault the pages in once
    store.delete(first)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        oid = store.put(src)
        times.append(time.perf_counter() - t)
        store.delete(oid)
    return src.nbytes / statistics.median(times) / 1e9


def bench_put_cold(src: np.ndarray, repeat: int) -> float:
    """GB/s of put into a fresh store (untouched pages)."""
    rates = []
    for _ in range(repeat):
        with ObjectStore.open(src.nbytes + (64 << 20)) as store:
            t = time.perf_counter()
            store.put(src)
            rates.append(src.nbytes / (time.perf_counter() - t) / 1e9)
        gc.collect()
    return statistics.median(rates)


def bench_memcpy(src: np.ndarray, n: int) -> tuple[float, float]:
    """GB/s of a one-thread numpy copy and of the store's parallel copy into
    warm shared memory (an anonymous shared mapping, touched beforehand)."""
    mm = mmap.mmap(-1, max(src.nbytes, 1), flags=mmap.MAP_SHARED)
    dst = np.frombuffer(mm, dtype=np.uint8, count=src.nbytes)
    dst.fill(1)
    one, par = [], []
    for _ in range(n):
        t = time.perf_counter()
        np.copyto(dst, src)
        one.append(time.perf_counter() - t)
        t = time.perf_counter()
        parallel_copy(dst, src, threads=os.cpu_count() or 1)
        par.append(time.perf_counter() - t)
    del dst
    mm.close()
    return src.nbytes / statistics.median(one) / 1e9, src.nbytes / statistics.median(par) / 1e9


def bench_mp_shm(src: np.ndarray, n: int) -> dict:
    """multiprocessing.shared_memory: create+write, and attach+map."""
    create_write, attach = [], []
    for _ in range(n):
        t = time.perf_counter()
        seg = shared_memory.SharedMemory(create=True, size=max(src.nbytes, 1))
        np.frombuffer(seg.buf, dtype=np.uint8, count=src.nbytes)[:] = src
        create_write.append(time.perf_counter() - t)
        t = time.perf_counter()
        other = shared_memory.SharedMemory(name=seg.name)
        view = np.frombuffer(other.buf, dtype=np.uint8, count=src.nbytes)
        attach.append(time.perf_counter() - t)
        del view
        other.close()
        seg.close()
        seg.unlink()
    return {"create_write": h.summarize(create_write), "attach": h.summarize(attach)}


def bench_ray(sizes: list[int], quick: bool) -> dict:
    """ray.put / ray.get of the same arrays, Ray's default settings. Before
    timing large puts, put-and-free cycles run through Ray's whole store so
    that later puts land in warm pages. The cold figure is the first put of
    a fresh Ray session (measured in a session of its own)."""
    try:
        import ray
    except ImportError:
        return {}
    out: dict = {}
    for size in sizes:
        if size >= 64 << 20:
            src = np.ones(size, dtype=np.uint8)
            ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
            t = time.perf_counter()
            ref = ray.put(src)
            out[size] = {"put_first_gbps": size / (time.perf_counter() - t) / 1e9}
            del ref
            ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    capacity = int(ray.available_resources().get("object_store_memory", 2 << 30))
    try:
        for size in sizes:
            src = np.ones(size, dtype=np.uint8)
            n = max(3, min(2000, iterations(size, quick) // 4))
            if size >= 64 << 20:  # warm up: cycle the whole store once
                for _ in range(max(2, capacity // size + 1)):
                    ref = ray.put(src)
                    del ref
            refs, puts = [], []
            for _ in range(n):
                t = time.perf_counter()
                ref = ray.put(src)
                puts.append(time.perf_counter() - t)
                refs.append(ref)
                if size >= 64 << 20:
                    refs.clear()  # free it, so the next put reuses the memory
            gets = h.time_each(lambda: ray.get(ref), n)
            out.setdefault(size, {}).update(
                put=h.summarize(puts), put_gbps=size / statistics.median(puts) / 1e9, get=h.summarize(gets)
            )
            del refs, ref
    finally:
        ray.shutdown()
    return out


def bench_anchor(script: str, python: str, sizes: list[int], quick: bool, rounds: int) -> dict:
    """Run bench/anchors/<script> under `python` `rounds` times (its own
    process each time); per size and figure, the median over the rounds."""
    path = Path(__file__).resolve().parent / "anchors" / script
    runs = []
    for _ in range(rounds):
        done = subprocess.run([python, str(path), ",".join(map(str, sizes)), "quick" if quick else "full"],
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            print(f"{script} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            return {}
        runs.append({int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()})
    return {size: {key: statistics.median(r[size][key] for r in runs) for key in runs[0][size]}
            for size in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and few iterations (smoke test)")
    ap.add_argument("--json", help="where to write the JSON results")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray baseline")
    ap.add_argument("--plasma-python", help="an interpreter with pyarrow 11.0 (plasma) and numpy < 2")
    ap.add_argument("--vineyard-python", help="an interpreter with vineyard")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each anchor (median taken)")
    args = ap.parse_args()
    sizes = QUICK_SIZES if args.quick else SIZES
    rows, records = [], {}
    with ObjectStore.open(3 << 30 if not args.quick else 256 << 20) as store:
        for size in sizes:
            n = iterations(size, args.quick)
            src = np.ones(size, dtype=np.uint8)
            life = bench_lifecycle(store, size, n)
            rec = {"size": size, **life}
            if size >= 1 << 20:
                k = max(3, min(50, n))
                rec["put_warm_gbps"] = bench_put_warm(store, src, k)
                rec["put_cold_gbps"] = bench_put_cold(src, 3) if size >= 64 << 20 else None
                rec["memcpy_gbps"], rec["parallel_copy_gbps"] = bench_memcpy(src, k)
            rec["mp_shm"] = bench_mp_shm(src, min(n, 200))
            records[size] = rec
            del src
            gc.collect()
    ray = {} if args.no_ray else bench_ray(sizes, args.quick)
    rounds = 1 if args.quick else args.rounds
    plasma = bench_anchor("plasma_bench.py", args.plasma_python, sizes, args.quick, rounds) if args.plasma_python else {}
    vine = (bench_anchor("vineyard_bench.py", args.vineyard_python, sizes, args.quick, rounds)
            if args.vineyard_python else {})
    for size, rec in records.items():
        r = ray.get(size, {})
        p, v = plasma.get(size, {}), vine.get(size, {})
        rows.append(
            {
                "size": h.human_size(size),
                "cs50": rec["create_seal"]["median_us"],
                "cs99": rec["create_seal"]["p99_us"],
                "get50": rec["get"]["median_us"],
                "get99": rec["get"]["p99_us"],
                "rel50": rec["release"]["median_us"],
                "rel99": rec["release"]["p99_us"],
                "warm": rec.get("put_warm_gbps"),
                "cold": rec.get("put_cold_gbps"),
                "memcpy": rec.get("memcpy_gbps"),
                "pcopy": rec.get("parallel_copy_gbps"),
                "shm_cw": rec["mp_shm"]["create_write"]["median_us"],
                "shm_at": rec["mp_shm"]["attach"]["median_us"],
                "ray_put": r.get("put_gbps") if size >= 1 << 20 else (r.get("put") or {}).get("median_us"),
                "ray_cold": r.get("put_first_gbps"),
                "ray_get": (r.get("get") or {}).get("median_us"),
                "pl_cs": p.get("create_seal_us"),
                "pl_get": p.get("get_us"),
                "pl_put": p.get("put_gbps"),
                "vy_cs": v.get("create_seal_us"),
                "vy_get": v.get("get_us"),
                "vy_put": v.get("put_gbps"),
            }
        )
    print("shoal object store (latencies in us, rates in GB/s)")
    print(
        h.table(
            rows,
            [
                ("size", "size"),
                ("cs50", "create+seal p50"),
                ("cs99", "p99"),
                ("get50", "get p50"),
                ("get99", "p99"),
                ("rel50", "release p50"),
                ("rel99", "p99"),
                ("warm", "put warm GB/s"),
                ("cold", "put cold GB/s"),
                ("memcpy", "memcpy 1t GB/s"),
                ("pcopy", "par.copy GB/s"),
                ("shm_cw", "mp.shm create+write us"),
                ("shm_at", "mp.shm attach us"),
                ("ray_put", "ray put us|GB/s"),
                ("ray_cold", "ray cold put GB/s"),
                ("ray_get", "ray get us"),
            ],
        )
    )
    if plasma or vine:
        print("\nThe anchors, same sizes (latencies in us, rates in GB/s; medians of their rounds)")
        print(h.table(rows, [("size", "size"), ("cs50", "shoal create+seal"), ("pl_cs", "plasma"),
                             ("vy_cs", "vineyard"), ("get50", "shoal get"), ("pl_get", "plasma"),
                             ("vy_get", "vineyard"), ("warm", "shoal put GB/s"), ("pl_put", "plasma"),
                             ("vy_put", "vineyard")]))
    path = h.save("bench_store", {"results": records, "ray": ray, "plasma": plasma, "vineyard": vine}, args.json)
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
