"""Spilling: work whose data is several times the object store, beside Ray
2.60 and the disk's own bandwidth, in one invocation.

  job_3x_store_s          put 3x the store in 256 MiB arrays, then 8 tasks read
                          them all (each array once) and return their sums     (s)
  job_put_s / job_read_s  the two phases of that job                          (s)
  job_peak_pss_gb         peak PSS of the process tree during the job          (GB)
  job_{put,read}_peak_pss_gb  ... during each phase                           (GB)
  job_baseline_pss_gb     ... just before it (interpreters, the driver's array) (GB)
  spill_write_gbps        bytes the spiller wrote / time it spent writing      (GB/s)
  disk_write_gbps         a plain file of 1 GiB written with write(), synced     (GB/s)
  disk_write_direct_gbps  the same with O_DIRECT                               (GB/s)
  restore_gbps            first get() + sum of a spilled 256 MiB array, its file
                          dropped from the page cache first (get() brings it
                          back into the store when there is room)              (GB/s)
  mapped_read_gbps        another one mapped from its file, then summed        (GB/s)
  copied_read_gbps        another one read into private memory, then summed    (GB/s)
  disk_read_gbps          the plain file read back with read(), not cached     (GB/s)
  disk_read_cached_gbps   ... and again, from the page cache                   (GB/s)
  small_put_per_s         100,000 objects of 1 KB put through an 80 MiB store  (objects/s)
  small_get_per_s         ... and read back, most of them spilled              (objects/s)

Files go to a temporary folder on the disk that holds the system's temp
directory (so Ray, shoal and the plain file share one disk and page cache).

Usage: python bench/bench_spill.py [--quick] [--no-ray] [--store-mib N] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402
from bench_tasks import PeakPSS, have_ray  # noqa: E402

MiB = 1 << 20
GOALS = {
    "job_3x_store_s": "<= 0.5 x Ray",
    "job_peak_pss_gb": "<= store + 15%",
    "spill_write_gbps": ">= 80% of disk write",
    "restore_gbps": ">= 80% of disk read",
}


def start(name: str, store: int, directory: str):
    if name == "shoal":
        import shoal as ray

        ray.init(num_cpus=2, object_store_memory=store, object_spilling_directory=directory)
    else:
        import ray  # type: ignore

        ray.init(num_cpus=2, object_store_memory=store, object_spilling_directory=directory,
                 include_dashboard=False, logging_level="ERROR")
    return ray


def job(name: str, store: int, array_bytes: int, directory: str) -> dict:
    """Put 3x the store, then 8 tasks each sum an eighth of the arrays."""
    ray = start(name, store, directory)
    try:
        @ray.remote
        def sums(refs):
            return [float(ray.get(r).sum()) for r in refs]  # one array alive at a time

        n = array_bytes // 8
        count = 3 * store // array_bytes
        buf = np.empty(n)
        ray.get(sums.remote([ray.put(np.zeros(8))]))  # workers up
        gc.collect()
        baseline = pss_now()  # the interpreters and the driver's array, before any put
        sampler = PeakPSS(0.2)
        sampler.start()
        t0 = time.perf_counter()
        refs = []
        for k in range(count):
            buf.fill(k)
            refs.append(ray.put(buf))
        t1 = time.perf_counter()
        put_peak = sampler.stop()
        sampler = PeakPSS(0.2)
        sampler.start()
        got = ray.get([sums.remote(refs[i::8]) for i in range(8)])
        t2 = time.perf_counter()
        read_peak = sampler.stop()
        peak = max(put_peak, read_peak)
        for i, part in enumerate(got):
            assert part == [float(k * n) for k in range(i, count, 8)], (i, part[:3])
        out = {"job_3x_store_s": t2 - t0, "job_put_s": t1 - t0, "job_read_s": t2 - t1, "job_peak_pss_gb": peak,
               "job_baseline_pss_gb": baseline, "job_put_peak_pss_gb": put_peak, "job_read_peak_pss_gb": read_peak}
        if name == "shoal":
            out.update(shoal_spill_figures(ray, refs, array_bytes))
        del refs, got
        return out
    finally:
        ray.shutdown()


def pss_now() -> float:
    """PSS of this process and its descendants now (GB)."""
    import psutil

    total = 0
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / 1e9


def shoal_spill_figures(ray, refs: list, array_bytes: int) -> dict:
    """The spiller's write rate, and the first read of a spilled array (its
    file dropped from the page cache first) three ways: what get() does
    (back into the store when there is room), mapped, and copied into
    private memory."""
    from shoal import serialization
    from shoal._store._files import FileBuffer
    from shoal.spill.files import decode
    from shoal.util.memory import memory_objects

    rt = ray.objectref.current()
    stats = rt.spiller.stats
    out = {"spill_write_gbps": stats.bytes_written / stats.seconds_writing / 1e9 if stats.seconds_writing else None}
    where = {o.object_id: o.where for o in memory_objects()}
    spilled = [r for r in refs if where.get(r.hex()) == "spilled"]
    if len(spilled) < 3:
        return out
    drop_cached(rt, spilled[0])
    t = time.perf_counter()
    ray.get(spilled[0]).sum()  # the sum touches every page
    out["restore_gbps"] = array_bytes / (time.perf_counter() - t) / 1e9
    for key, ref, mapped in (("mapped_read_gbps", spilled[1], True), ("copied_read_gbps", spilled[2], False)):
        location, size, meta = spilled_location(rt, ref)
        drop_cached(rt, ref)
        t = time.perf_counter()
        fd = os.open(rt.store.spill_files.path_of(location), os.O_RDONLY)
        try:
            buf = FileBuffer.open(fd, decode(location)[1], size, meta, map=mapped)
        finally:
            os.close(fd)
        serialization.deserialize(buf, buf.metadata).sum()
        out[key] = array_bytes / (time.perf_counter() - t) / 1e9
    return out


def drop_cached(rt, ref) -> None:
    """Drop a spilled object's file from the page cache: what a first read
    after a spill meets once memory is needed elsewhere."""
    location = spilled_location(rt, ref)[0]
    fd = os.open(rt.store.spill_files.path_of(location), os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def spilled_location(rt, ref) -> tuple[int, int, int]:
    for oid, state, _f, _p, data, meta, _b, location, _s in rt.store.raw.list_objects():
        if oid == ref.binary():
            return location, data, meta
    raise LookupError(ref)


def disk(directory: str, nbytes: int) -> dict:
    """The disk's own bandwidth, with a plain file of nbytes: written with
    write() (through the page cache, synced at the end) and with O_DIRECT;
    read back with read() after dropping it from the page cache (cold), and
    again (cached)."""
    from shoal._store._files import write_buffers

    data = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    view = memoryview(data)
    path = os.path.join(directory, "plain.bin")
    out = {}
    t = time.perf_counter()
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    off = 0
    while off < nbytes:
        off += os.write(fd, view[off:off + 64 * MiB])
    os.fsync(fd)
    os.close(fd)
    out["disk_write_gbps"] = nbytes / (time.perf_counter() - t) / 1e9
    os.unlink(path)
    try:
        t = time.perf_counter()
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_DIRECT, 0o600)
        write_buffers(fd, 0, [view], True)
        os.close(fd)
        out["disk_write_direct_gbps"] = nbytes / (time.perf_counter() - t) / 1e9
    except OSError:  # no direct I/O on this file system
        pass
    into = np.empty(nbytes, dtype=np.uint8)
    into.fill(0)  # warm: the reads measure the disk, not page faults
    target = memoryview(into)
    for key in ("disk_read_gbps", "disk_read_cached_gbps"):
        fd = os.open(path, os.O_RDONLY)
        if key == "disk_read_gbps":
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        t = time.perf_counter()
        off = 0
        while off < nbytes:
            off += os.readv(fd, [target[off:off + 64 * MiB]])
        out[key] = nbytes / (time.perf_counter() - t) / 1e9
        os.close(fd)
    os.unlink(path)
    return out


def small_objects(name: str, count: int, directory: str) -> dict:
    ray = start(name, 80 * MiB, directory)
    try:
        payload = b"x" * 1000
        t = time.perf_counter()
        refs = [ray.put(payload) for _ in range(count)]
        put_rate = count / (time.perf_counter() - t)
        t = time.perf_counter()
        got = ray.get(refs)
        get_rate = count / (time.perf_counter() - t)
        assert len(got) == count and got[-1] == payload
        return {"small_put_per_s": put_rate, "small_get_per_s": get_rate}
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--store-mib", type=int, default=2048)
    ap.add_argument("--json")
    args = ap.parse_args()
    store = (256 if args.quick else args.store_mib) * MiB
    array = (32 if args.quick else 256) * MiB
    small = 10_000 if args.quick else 100_000
    base = tempfile.mkdtemp(prefix="bench-spill-")
    peers = ["shoal"] + (["ray"] if not args.no_ray and have_ray() else [])
    results: dict = {p: {} for p in peers}
    try:
        results["disk"] = disk(base, 1 << 30 if not args.quick else 64 * MiB)
        for name in peers:
            folder = os.path.join(base, name)
            results[name].update(job(name, store, array, folder))
            results[name].update(small_objects(name, small, folder))
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    d = results["disk"]
    rows = []
    for key in ["job_3x_store_s", "job_put_s", "job_read_s", "job_peak_pss_gb", "job_put_peak_pss_gb",
                "job_read_peak_pss_gb", "job_baseline_pss_gb",
                "spill_write_gbps", "restore_gbps", "mapped_read_gbps", "copied_read_gbps", "small_put_per_s",
                "small_get_per_s"]:
        s = results["shoal"].get(key)
        r = results.get("ray", {}).get(key)
        lower_better = key.endswith(("_s", "_gb")) and not key.endswith("_per_s")
        ratio = (r / s if lower_better else s / r) if s and r else None
        rows.append({"name": key, "shoal": s, "ray": r, "x ray": ratio, "goal": GOALS.get(key, "")})
    for key in ("disk_write_gbps", "disk_write_direct_gbps", "disk_read_gbps", "disk_read_cached_gbps"):
        rows.append({"name": key, "shoal": d.get(key)})
    print(f"Spilling: {store // MiB} MiB store, {3 * store // array} arrays of {array // MiB} MiB "
          f"('x ray': how many times better than Ray; disk rows: a plain file, same run)")
    print(h.table(rows, [("name", "benchmark"), ("shoal", "shoal"), ("ray", "ray 2.60"), ("x ray", "x ray"),
                         ("goal", "goal")]))
    s = results["shoal"]
    checks = {
        "job_vs_ray": s["job_3x_store_s"] / results["ray"]["job_3x_store_s"] if "ray" in results else None,
        "pss_vs_store": s["job_peak_pss_gb"] * 1e9 / store,
        "spill_write_vs_disk": (s.get("spill_write_gbps") or 0) / max(d["disk_write_gbps"],
                                                                      d.get("disk_write_direct_gbps", 0)),
        "restore_vs_disk_read": (s.get("restore_gbps") or 0) / d["disk_read_gbps"],
    }
    print("\n" + "  ".join(f"{k} {v:.2f}" for k, v in checks.items() if v is not None))
    path = h.save("bench_spill", {"results": results, "rows": rows, "checks": checks}, args.json)
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
