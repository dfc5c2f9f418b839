"""The floor under the rows of bench_tasks.py and bench_actors.py: what the
machine, and the pieces of the runtime no task can skip, cost here, measured
in the same run as the rows.

  ring_rtt_us          a task's message out and its DONE back over the rings,
                       pickled as the runtime pickles them, between two
                       processes that spin as the runtime's do: the least a
                       sync task or actor call can cost
  submit_per_s         f.remote() with no worker to take the tasks: the
                       driver's submit path alone
  execute_per_s        a worker's execute path alone, in one process: decode a
                       TASK message, run a no-op, seal its result, encode DONE
  fault_in_gbps_{1,2}  first touch of fresh shared-memory pages, 1 and 2 threads
  memcpy_gbps_{1,2}    copy into warm shared memory, 1 and 2 threads
  sum_gbps_2           numpy sum of a warm float64 array, 2 threads (what the
                       8 tasks of the 800 MB rows do at least)

`python bench/_floors.py` prints them; `row_floors` turns them into the floor
of each row of bench_tasks.py and bench_actors.py (`floor_note` says how).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import statistics
import sys
import threading
import time
import warnings

import numpy as np

MiB = 1 << 20


def _spec(fid: bytes):
    from shoal import ids
    from shoal.scheduler import protocol as P

    return P.TaskSpec(ids.new_task_id(), fid, "noop", None, None, 1, 3, False, 0, {"CPU": 1.0})


def ring_rtt_us(n: int = 20_000, spin: float = 50e-6) -> float:
    """Median round trip: (TASK, seq, spec) to a child that answers
    (DONE, seq, OK, duration, {}, timings), both pickled."""
    from shoal._channel import Ring, footprint
    from shoal.scheduler import protocol as P

    cap = 1 << 16
    fd = os.memfd_create("bench-floor")
    os.ftruncate(fd, 2 * footprint(cap))
    mem = mmap.mmap(fd, 2 * footprint(cap))
    out, back = Ring(mem, 0, cap, init=True), Ring(mem, footprint(cap), cap, init=True)
    a_fd, b_fd = os.eventfd(0, os.EFD_NONBLOCK), os.eventfd(0, os.EFD_NONBLOCK)
    pid = os.fork()
    if pid == 0:
        try:
            while True:
                out.wait_readable(b_fd, spin)
                msg = P.decode(out.recv())
                if msg[0] == P.EXIT:
                    break
                back.send(P.encode((P.DONE, msg[1], P.OK, 1e-6, {}, (0.0, 0, 8, None))), a_fd)
        finally:
            os._exit(0)
    spec = _spec(b"f" * 20)
    times = []
    clock = time.perf_counter
    for seq in range(n):
        t = clock()
        out.send(P.encode((P.TASK, seq, spec)), b_fd)
        back.wait_readable(a_fd, spin)
        P.decode(back.recv())
        times.append(clock() - t)
    out.send(P.encode((P.EXIT,)), b_fd)
    os.waitpid(pid, 0)
    del out, back  # (the rings hold views of the mapping; it goes with them)
    for f in (fd, a_fd, b_fd):
        os.close(f)
    return statistics.median(times) * 1e6


def submit_per_s(n: int = 20_000) -> float:
    """Tasks submitted per second by a runtime with no CPU to run them."""
    import shoal

    shoal.init(num_cpus=0, object_store_memory=64 * MiB)
    try:
        @shoal.remote
        def noop():
            return 0

        with warnings.catch_warnings():  # (that no CPU will ever run them is the point)
            warnings.simplefilter("ignore")
            refs = [noop.remote() for _ in range(100)]  # (its definition stored, paths warm)
        t = time.perf_counter()
        refs += [noop.remote() for _ in range(n)]
        return n / (time.perf_counter() - t)
    finally:
        shoal.shutdown()


class _Context:
    """What the executor asks of a worker's context, for a no-op task."""

    assigned: dict = {}
    gpu_ids: list = []
    actor_id = None

    def __init__(self, store):
        self.store = store

    def user_code(self):
        return contextlib.nullcontext()


def execute_per_s(n: int = 20_000) -> float:
    """No-op tasks through a worker's execute path, in this process."""
    from shoal.scheduler import protocol as P
    from shoal.store import ObjectStore
    from shoal.worker.execution import Executor

    def noop():
        return 0

    with ObjectStore.open(64 * MiB) as store:
        fid = store.put(noop)
        executor = Executor(_Context(store), os.getpid())
        messages = [P.encode((P.TASK, seq, _spec(fid))) for seq in range(n)]
        clock = time.perf_counter
        t = clock()
        for data in messages:
            _, seq, spec = P.decode(data)
            started = clock()
            status, contained = executor.run(spec)
            P.encode((P.DONE, seq, status, clock() - started, contained, (started, 0, 8, None)))
        elapsed = clock() - t
        for data in messages:  # (their results, made above)
            for rid in P.return_ids(P.decode(data)[2]):
                store.delete(rid)
    return n / elapsed


def _touch(view: memoryview, threads: int) -> None:
    """Write every page of `view`, split among `threads`."""
    n = view.nbytes
    step = (n // threads + 4095) // 4096 * 4096

    def part(k):
        arr = np.frombuffer(view[k * step:min(n, (k + 1) * step)], dtype=np.uint8)
        arr[::4096] = 1

    workers = [threading.Thread(target=part, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def fault_in_gbps(threads: int, nbytes: int = 512 * MiB) -> float:
    """First touch of fresh memfd pages (what a fresh store's puts pay)."""
    fd = os.memfd_create("bench-fault")
    os.ftruncate(fd, nbytes)
    mem = mmap.mmap(fd, nbytes)
    try:
        view = memoryview(mem)
        t = time.perf_counter()
        _touch(view, threads)
        elapsed = time.perf_counter() - t
        view.release()
    finally:
        mem.close()
        os.close(fd)
    return nbytes / elapsed / 1e9


def memcpy_gbps(threads: int, nbytes: int = 512 * MiB, repeat: int = 5) -> float:
    """Copy into warm shared memory, best of `repeat` (what a warm put's
    copy costs at least)."""
    from shoal._store._core import parallel_copy

    fd = os.memfd_create("bench-copy")
    os.ftruncate(fd, nbytes)
    mem = mmap.mmap(fd, nbytes)
    try:
        src = np.ones(nbytes, dtype=np.uint8)
        dst = memoryview(mem)
        parallel_copy(dst, src, threads)  # warm the pages
        best = min(_timed(lambda: parallel_copy(dst, src, threads)) for _ in range(repeat))
        dst.release()
    finally:
        mem.close()
        os.close(fd)
    return nbytes / best / 1e9


def sum_gbps(threads: int, nbytes: int = 512 * MiB, repeat: int = 5) -> float:
    """numpy sum of a warm float64 array split among `threads`, best of `repeat`."""
    arr = np.ones(nbytes // 8)
    step = -(-arr.size // threads)

    def run():
        workers = [threading.Thread(target=arr[k * step:(k + 1) * step].sum) for k in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    run()
    return nbytes / min(_timed(run) for _ in range(repeat)) / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(quick: bool = False) -> dict:
    """Every floor, in one run."""
    n = 2000 if quick else 20_000
    size = 64 * MiB if quick else 512 * MiB
    return {
        "ring_rtt_us": ring_rtt_us(n),
        "submit_per_s": submit_per_s(n),
        "execute_per_s": execute_per_s(n),
        "fault_in_gbps_1": fault_in_gbps(1, size),
        "fault_in_gbps_2": fault_in_gbps(2, size),
        "memcpy_gbps_1": memcpy_gbps(1, size),
        "memcpy_gbps_2": memcpy_gbps(2, size),
        "sum_gbps_2": sum_gbps(2, size),
    }


FLOOR_NOTES = {
    "sync": "1 / ring_rtt: one message out, one back",
    "async": "min(submit, cpus / (1/submit + 1/execute)): the driver's submit path on one core, "
             "the rest of the CPU time split between submitting and executing",
    "batch": "the async floor / 1000",
    "put_gb": "memcpy_gbps_2: copy into warm shared memory with 2 threads",
    "cold": "800 MB / fault_in_gbps_2 + 8 x 800 MB / sum_gbps_2: first touch of fresh pages, then the sums",
    "warm": "800 MB / memcpy_gbps_2 + 8 x 800 MB / sum_gbps_2: one copy into warm pages, then the sums",
    "rtt_us": "ring_rtt_us",
}


def row_floors(f: dict, cpus: int, array: float = 800e6) -> dict[str, tuple[float, str]]:
    """The floor of each bench row from the measured floors `f` (see
    `measure`), in the row's own unit, with the key of FLOOR_NOTES that says
    how it was derived; `array` is the size of the "800 MB" rows' array
    (bytes; smaller with --quick). Rows missing here have no floor this file
    measures."""
    sync = 1e6 / f["ring_rtt_us"]
    submit, execute = f["submit_per_s"], f["execute_per_s"]
    asynchronous = min(submit, cpus / (1 / submit + 1 / execute))
    sums = 8 * array / (f["sum_gbps_2"] * 1e9)
    cold = array / (f["fault_in_gbps_2"] * 1e9) + sums
    warm = array / (f["memcpy_gbps_2"] * 1e9) + sums
    return {
        "single_client_tasks_sync": (sync, "sync"),
        "single_client_tasks_async": (asynchronous, "async"),
        "single_client_tasks_and_get_batch": (asynchronous / 1000, "batch"),
        "single_client_put_gigabytes": (f["memcpy_gbps_2"], "put_gb"),
        "array_800mb_cold_s": (cold, "cold"),
        "array_800mb_warm_s": (warm, "warm"),
        "1_1_actor_calls_sync": (sync, "sync"),
        "1_1_async_actor_calls_sync": (sync, "sync"),
        "actor_call_sync_p50_us": (f["ring_rtt_us"], "rtt_us"),
    }


def of_floor(name: str, value: float | None, floor: float | None) -> float | None:
    """How close a row comes to its floor: 1.0 at the floor, 0.5 at half its
    speed (twice its time); None where either is missing."""
    if not value or not floor:
        return None
    lower_is_better = name.endswith(("_s", "_us"))
    return floor / value if lower_is_better else value / floor


if __name__ == "__main__":
    for key, value in measure("--quick" in sys.argv).items():
        print(f"{key:18s} {value:,.2f}")
