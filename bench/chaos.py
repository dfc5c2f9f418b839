"""Chaos: a mixed workload under random process deaths, checked ref by ref.

Each round starts a runtime, submits a mixed workload (a DAG of tasks passing
large numpy arrays, nested tasks, puts and gets, a stateful actor with
max_restarts, a threaded and an asyncio actor, streaming generators, and
shoal.util.Executor) while a killer thread sends SIGKILL, SIGSEGV, SIGTERM or
SIGSTOP-then-SIGCONT to a random worker, actor or the fork server at random
moments. Every ref must resolve within the deadline to its right value
(checked) or to a typed error as Ray gives it (WorkerCrashedError,
ActorDiedError, ActorUnavailableError, ObjectLostError, TaskCancelledError);
anything else is counted (a hang, a wrong value, an untyped error). After
each round's shutdown no child process, no /dev/shm entry and no spill file
may remain.

--driver-deaths N runs the workload in N child drivers instead and kills
each with SIGKILL at a random point inside put, get, submit, actor creation
or shutdown (the child stops itself there; it dies stopped), then measures
how long until nothing of its runtime is left.

Usage:
  python bench/chaos.py --rounds 200 --seed 1 [--json PATH]
  python bench/chaos.py --driver-deaths 50 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures as cf
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # noqa: E402

import shoal as ray  # noqa: E402
from shoal import exceptions as E  # noqa: E402
from shoal import objectref  # noqa: E402
from shoal.util import Executor  # noqa: E402
from shoal.util.state import list_workers  # noqa: E402

#: What a ref may raise instead of its value, as Ray would (checked in order:
#: a task error caused by one of these is an instance of it too).
TYPED = (E.ActorUnavailableError, E.ActorDiedError, E.WorkerCrashedError, E.ObjectLostError,
         E.TaskCancelledError)

SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGSEGV": signal.SIGSEGV, "SIGTERM": signal.SIGTERM, "SIGSTOP": None}


# -- the workload ---------------------------------------------------------------------


@ray.remote(max_retries=2)
def make(v, n):
    return np.full(n, v, dtype=np.float64)


@ray.remote
def add(a, b):
    return a + b


@ray.remote
def total(x):
    return float(x.sum())


@ray.remote
def inner(i):
    return i * i


@ray.remote
def outer(k):
    return sum(ray.get([inner.remote(i) for i in range(k)]))


@ray.remote(num_returns="streaming")
def stream(k):
    for i in range(k):
        yield i * i


@ray.remote(max_restarts=2, max_task_retries=1)
class Counter:
    def __init__(self, factor):
        self.factor = factor
        self.n = 0

    def mul(self, x):
        return x * self.factor

    def inc(self):
        self.n += 1
        return self.n


@ray.remote(max_concurrency=4, max_restarts=1)
class Threaded:
    def square(self, x):
        return x * x


@ray.remote(max_restarts=1)
class Async:
    async def echo(self, x):
        await asyncio.sleep(0)
        return x


def seven_times(x):
    return 7 * x


def submit_workload(rng: random.Random, size_bytes: int) -> list:
    """Submit everything; return [(kind, resolve(timeout) -> bool)]: True
    if the value is right; raises what the ref raises."""
    n = max(1, size_bytes // 8)
    checks: list = []

    def ref_check(kind, ref, good):
        checks.append((kind, lambda t: good(ray.get(ref, timeout=t))))

    for _ in range(4):  # a DAG: two large arrays, their sum, its total
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        s = add.remote(make.remote(a, n), make.remote(b, n))
        ref_check("dag", total.remote(s), lambda v, e=float((a + b) * n): v == e)
        ref_check("dag", s, lambda v, e=a + b: v.shape == (n,) and bool((v == e).all()))
    for _ in range(3):
        k = rng.randint(2, 5)
        ref_check("nested", outer.remote(k), lambda v, e=sum(i * i for i in range(k)): v == e)
    for _ in range(3):
        v = rng.randint(0, 99)
        p = ray.put(np.full(n, v, dtype=np.float64))
        ref_check("put", p, lambda x, e=v: bool((x == e).all()))
        ref_check("put", total.remote(p), lambda x, e=float(v * n): x == e)
    c = Counter.remote(3)
    for i in range(12):
        ref_check("actor", c.mul.remote(i), lambda v, e=3 * i: v == e)
    incs = 6
    for _ in range(incs):  # its state: restarts begin again at 1
        ref_check("actor", c.inc.remote(), lambda v: isinstance(v, int) and 1 <= v <= incs)
    t = Threaded.remote()
    for i in range(8):
        ref_check("threaded", t.square.remote(i), lambda v, e=i * i: v == e)
    a = Async.remote()
    for i in range(8):
        ref_check("asyncio", a.echo.remote(i), lambda v, e=i: v == e)
    for _ in range(2):
        k = rng.randint(2, 6)
        gen = stream.remote(k)

        def resolve_stream(timeout, gen=gen, k=k):
            deadline = time.monotonic() + timeout
            got = []
            for _ in range(k + 1):
                try:
                    ref = gen.next(timeout=max(0.0, deadline - time.monotonic()))
                except StopIteration:
                    break
                got.append(ray.get(ref, timeout=max(0.0, deadline - time.monotonic())))
            return got == [i * i for i in range(k)]

        checks.append(("stream", resolve_stream))
    ex = Executor(max_workers=2)
    for i in range(6):
        fut = ex.submit(seven_times, i)
        checks.append(("executor", lambda t, f=fut, e=7 * i: f.result(timeout=t) == e))
    checks.append(("executor", lambda t: ex.shutdown(wait=False) or True))
    return checks


# -- the killer --------------------------------------------------------------------------


class Killer(threading.Thread):
    """Sends a random signal to a random worker, actor or the fork server
    every `interval` seconds on average (exponentially distributed)."""

    def __init__(self, seed: int, interval: float):
        super().__init__(name="chaos-killer", daemon=True)
        self.rng = random.Random(seed)
        self.interval = interval
        self.halt = threading.Event()
        self.faults: collections.Counter = collections.Counter()
        self.error: BaseException | None = None

    def targets(self) -> dict[str, list[int]]:
        rows = list_workers(limit=10_000)
        shell = objectref.current().shell
        server = shell.pool.server_pid
        return {
            "worker": [r["pid"] for r in rows if r["pid"] and r["actor_id"] is None],
            "actor": [r["pid"] for r in rows if r["pid"] and r["actor_id"] is not None],
            "forkserver": [server] if server else [],
        }

    def run(self) -> None:
        try:
            while not self.halt.wait(self.rng.expovariate(1 / self.interval)):
                self.strike()
        except BaseException as e:  # reported by the round
            self.error = e

    def strike(self) -> None:
        rng = self.rng
        targets = {k: v for k, v in self.targets().items() if v}
        if not targets:
            return
        kind = rng.choice(sorted(targets))
        pid = rng.choice(targets[kind])
        name = rng.choice(sorted(SIGNALS))
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            # Only a process of this runtime: the pidfd holds its identity.
            if psutil.Process(pid).ppid() not in (os.getpid(), objectref.current().shell.pool.server_pid):
                return
            if name == "SIGSTOP":
                signal.pidfd_send_signal(pidfd, signal.SIGSTOP)
                self.halt.wait(rng.uniform(0.01, 0.4))
                signal.pidfd_send_signal(pidfd, signal.SIGCONT)
            else:
                signal.pidfd_send_signal(pidfd, SIGNALS[name])
            self.faults[f"{kind}:{name}"] += 1
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
        finally:
            os.close(pidfd)


# -- one round ----------------------------------------------------------------------------


def control_sockets(pid: int) -> list[str]:
    """The control endpoint sockets that driver pid's runtime left (`shoal
    status` finds runtimes by them)."""
    from shoal import config

    try:
        return [n for n in os.listdir(config.runtime_dir()) if n.startswith(f"{pid}-")]
    except FileNotFoundError:
        return []


def shm_entries() -> set[str]:
    try:
        return {n for n in os.listdir("/dev/shm") if "shoal" in n.lower()}
    except FileNotFoundError:
        return set()


def classify(e: BaseException) -> str | None:
    for t in TYPED:
        if isinstance(e, t):
            return t.__name__
    return None


def run_round(index: int, seed: int, args) -> dict:
    rng = random.Random(seed)
    spill = tempfile.mkdtemp(prefix="chaos-spill-")
    shm_before = shm_entries()
    t0 = time.monotonic()
    out = {"round": index, "seed": seed, "refs": 0, "ok": 0, "wrong": 0, "hangs": 0,
           "typed": collections.Counter(), "untyped": collections.Counter(), "leaks": [], "notes": []}
    ray.init(num_cpus=args.cpus, object_store_memory=args.store_mb << 20, object_spilling_directory=spill,
             log_to_driver=args.verbose)
    killer = Killer(rng.randrange(1 << 30), args.interval)
    try:
        killer.start()
        checks = [c for _ in range(args.scale) for c in submit_workload(rng, args.size)]
        deadline = time.monotonic() + args.deadline
        for kind, resolve in checks:
            out["refs"] += 1
            try:
                good = resolve(max(0.5, deadline - time.monotonic()))
            except (E.GetTimeoutError, cf.TimeoutError):
                out["hangs"] += 1
                out["notes"].append(f"{kind}: no answer within the deadline")
            except Exception as e:  # noqa: BLE001 - sorted below
                name = classify(e)
                if name is not None:
                    out["typed"][name] += 1
                else:
                    out["untyped"][type(e).__name__] += 1
                    last = [line for line in str(e).splitlines() if line.strip()][-1:] or [""]
                    out["notes"].append(f"{kind}: {type(e).__name__}: {last[0][:400]}")
            else:
                out["ok" if good else "wrong"] += 1
                if not good:
                    out["notes"].append(f"{kind}: wrong value")
    finally:
        killer.halt.set()
        killer.join(30)
        ray.shutdown()
    if killer.error is not None:
        out["notes"].append(f"killer: {killer.error!r}")
    out["faults"] = killer.faults
    out["leaks"] = leaks(spill, shm_before)
    shutil.rmtree(spill, ignore_errors=True)
    out["seconds"] = time.monotonic() - t0
    return out


def leaks(spill: str, shm_before: set[str]) -> list[str]:
    """What the round left behind: child processes, /dev/shm entries, spill files."""
    found = []
    for p in psutil.Process().children(recursive=True):  # shutdown() waits for each: none may be left, zombie or not
        try:
            found.append(f"process {p.pid} ({p.status()})")
        except psutil.NoSuchProcess:
            pass
    found += [f"/dev/shm/{n}" for n in sorted(shm_entries() - shm_before)]
    for root, dirs, files in os.walk(spill):
        found += [os.path.join(root, f) for f in files]
        found += [os.path.join(root, d) for d in dirs]
    return found


def chaos(args) -> dict:
    totals = {"rounds": 0, "refs": 0, "ok": 0, "wrong": 0, "hangs": 0, "leaks": 0, "faults": collections.Counter(),
              "typed": collections.Counter(), "untyped": collections.Counter(), "seconds": 0.0}
    notes = []
    print(f"{'round':>5} {'s':>5} {'faults':>6} {'refs':>5} {'ok':>5} {'typed':>5} {'hangs':>5} {'wrong':>5} "
          f"{'untyped':>7} {'leaks':>5}", flush=True)
    for i in range(args.first, args.first + args.rounds):
        r = run_round(i, args.seed * 100_003 + i, args)
        totals["rounds"] += 1
        for k in ("refs", "ok", "wrong", "hangs", "seconds"):
            totals[k] += r[k]
        totals["leaks"] += len(r["leaks"])
        for k in ("faults", "typed", "untyped"):
            totals[k].update(r[k])
        print(f"{i:>5} {r['seconds']:>5.1f} {sum(r['faults'].values()):>6} {r['refs']:>5} {r['ok']:>5} "
              f"{sum(r['typed'].values()):>5} {r['hangs']:>5} {r['wrong']:>5} {sum(r['untyped'].values()):>7} "
              f"{len(r['leaks']):>5}", flush=True)
        for note in r["notes"] + r["leaks"]:
            print(f"      {note}", flush=True)
            notes.append(f"round {i}: {note}")
    print("\ntotal:", flush=True)
    print(f"  rounds {totals['rounds']}, {totals['seconds']:.0f} s; refs checked {totals['refs']}: "
          f"{totals['ok']} right values, {sum(totals['typed'].values())} typed errors, {totals['hangs']} hangs, "
          f"{totals['wrong']} wrong values, {sum(totals['untyped'].values())} untyped errors; leaks {totals['leaks']}")
    print("  faults: " + ", ".join(f"{k} {v}" for k, v in sorted(totals["faults"].items())))
    print("  typed errors: " + (", ".join(f"{k} {v}" for k, v in sorted(totals["typed"].items())) or "none"))
    if totals["untyped"]:
        print("  untyped errors: " + ", ".join(f"{k} {v}" for k, v in sorted(totals["untyped"].items())))
    return {**{k: (dict(v) if isinstance(v, collections.Counter) else v) for k, v in totals.items()},
            "notes": notes[:200]}


# -- driver deaths ---------------------------------------------------------------------------

POINTS = ("put", "get", "submit", "actor_creation", "shutdown")


def _point_code(point: str):
    from shoal import actor, api, remote_function

    return {"put": api.put.__code__, "get": api.get.__code__,
            "submit": remote_function.RemoteFunction._submit.__code__,
            "actor_creation": actor.ActorClass._create.__code__, "shutdown": api.shutdown.__code__}[point]


#: How the driver dies at its point: a signal the parent sends (the child
#: stops itself there first), or what the child does itself when told to.
DEATHS = ("SIGKILL", "SIGSEGV", "exit", "exception")


def child_main(point: str, how: str, seed: int, size: int, spill: str) -> None:
    """A driver that runs the workload and dies at a random moment inside
    `point` (its nth call, then m profiled events deeper), `how` says.
    Point "lock": with the store's lock held, half way through; "idle":
    once every result is in, before shutdown."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSEGV: no core file
    rng = random.Random(seed)
    code = _point_code(point) if point not in ("lock", "idle") else None
    nth = 1 if point == "shutdown" else rng.randint(1, 3)
    deeper = rng.randint(0, 400)
    state = {"calls": 0, "events": -1}

    def die_here():
        sys.setprofile(None)
        os.write(1, f"at {point}\n".encode())
        if how in ("SIGKILL", "SIGSEGV"):
            os.kill(os.getpid(), signal.SIGSTOP)  # the parent's signal comes now
        sys.stdin.readline()  # the parent has seen every process: go
        if how == "exit":
            os._exit(3)
        raise RuntimeError(f"the driver fails inside {point}")

    def hook(frame, event, arg):
        if state["events"] >= 0:
            state["events"] += 1
            if state["events"] >= deeper or (event == "return" and frame.f_code is code):
                die_here()
        elif event == "call" and frame.f_code is code:
            state["calls"] += 1
            if state["calls"] >= nth:
                state["events"] = 0
                if deeper == 0:
                    die_here()

    ray.init(num_cpus=2, object_store_memory=128 << 20, object_spilling_directory=spill, log_to_driver=False)
    if code is not None:
        sys.setprofile(hook)
    checks = submit_workload(rng, size)
    if point == "lock":
        for _, resolve in checks[: len(checks) // 2]:
            try:
                resolve(30)
            except Exception:  # noqa: BLE001 - only the death matters here
                pass
        objectref.current().store.raw._debug_lock_and_hold()
        die_here()
    for _, resolve in checks:
        try:
            resolve(30)
        except Exception:  # noqa: BLE001 - only the death matters here
            pass
    if point == "idle":
        die_here()
    ray.shutdown()
    sys.setprofile(None)
    os.write(1, b"finished\n")


def kill_driver(point: str, seed: int, size: int, timeout: float = 60.0, how: str = "SIGKILL") -> dict:
    """Run a child driver to `point`, end it there `how` (see DEATHS), and
    measure how long until its processes have exited and its spill folder
    and control socket are gone."""
    spill = tempfile.mkdtemp(prefix="chaos-driver-spill-")
    shm_before = shm_entries()
    proc = subprocess.Popen([sys.executable, __file__, "--child", point, "--how", how, "--seed", str(seed),
                             "--size", str(size), "--spill", spill], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = b""
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if ready:
            line = proc.stdout.readline()
        if not line.startswith(b"at "):
            proc.kill()
            proc.wait()
            return {"point": point, "how": how, "seed": seed, "reached": False, "left": []}
        kin = psutil.Process(proc.pid).children(recursive=True)
        pidfds = []
        for p in kin:
            try:
                pidfds.append(os.pidfd_open(p.pid))
            except ProcessLookupError:
                pass
        t0 = time.monotonic()
        if how == "SIGKILL":
            proc.kill()
        elif how == "SIGSEGV":
            proc.send_signal(signal.SIGSEGV)
            proc.send_signal(signal.SIGCONT)  # (it is stopped: the signal acts once it runs)
        else:
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        code = proc.wait(timeout)
        for fd in pidfds:  # each becomes readable when its process exits
            select.select([fd], [], [], timeout)
            os.close(fd)
        t_procs = time.monotonic() - t0
        # The fork server removes the spill folder before it exits: it is
        # gone by now, unless something failed (poll a little to see).
        deadline = time.monotonic() + 5
        while (os.listdir(spill) or control_sockets(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.001)
        t_clean = time.monotonic() - t0
        left = [f"process {p.pid}" for p in kin if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        left += [f"spill {n}" for n in os.listdir(spill)]
        left += [f"control socket {n}" for n in control_sockets(proc.pid)]
        left += [f"/dev/shm/{n}" for n in sorted(shm_entries() - shm_before)]
        return {"point": point, "how": how, "seed": seed, "reached": True, "exit_code": code,
                "processes": len(kin), "procs_gone_s": t_procs, "clean_s": t_clean, "left": left}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        shutil.rmtree(spill, ignore_errors=True)


def driver_deaths(args) -> dict:
    rng = random.Random(args.seed)
    rows = []
    print(f"{'#':>4} {'point':<15} {'procs':>5} {'gone ms':>8} {'clean ms':>8} left", flush=True)
    for i in range(args.driver_deaths):
        point = POINTS[i % len(POINTS)]
        r = kill_driver(point, rng.randrange(1 << 30), args.size)
        rows.append(r)
        if r["reached"]:
            print(f"{i:>4} {point:<15} {r['processes']:>5} {r['procs_gone_s'] * 1e3:>8.1f} "
                  f"{r['clean_s'] * 1e3:>8.1f} {' '.join(r['left']) or '-'}", flush=True)
        else:
            print(f"{i:>4} {point:<15} (the workload never reached it)", flush=True)
    reached = [r for r in rows if r["reached"]]
    clean = sorted(r["clean_s"] for r in reached)
    summary = {"runs": len(rows), "reached": len(reached), "left_behind": sum(len(r["left"]) for r in reached),
               "clean_ms_median": h.percentile(clean, 50) * 1e3, "clean_ms_p99": h.percentile(clean, 99) * 1e3,
               "clean_ms_max": (clean[-1] * 1e3) if clean else float("nan"),
               "over_1s": sum(1 for c in clean if c > 1.0)}
    print(f"\ndriver deaths: {summary['reached']} of {summary['runs']} reached their point; time to clean "
          f"median {summary['clean_ms_median']:.0f} ms, p99 {summary['clean_ms_p99']:.0f} ms, max "
          f"{summary['clean_ms_max']:.0f} ms; over 1 s: {summary['over_1s']}; left behind: {summary['left_behind']}")
    return {"summary": summary, "runs": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--first", type=int, default=0, help="index of the first round (its seed follows)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--store-mb", type=int, default=96)
    ap.add_argument("--size", type=int, default=2 << 20, help="bytes of each array (default 2 MiB)")
    ap.add_argument("--scale", type=int, default=2, help="copies of the workload submitted per round")
    ap.add_argument("--interval", type=float, default=0.05, help="mean seconds between faults")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds every ref of a round has to resolve")
    ap.add_argument("--driver-deaths", type=int, default=0, help="run N driver deaths instead of rounds")
    ap.add_argument("--json", default=None)
    ap.add_argument("--verbose", action="store_true", help="show the workers' output")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spill", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--how", default="SIGKILL", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child, args.how, args.seed, args.size, args.spill)
        return
    if args.driver_deaths:
        result = {"driver_deaths": driver_deaths(args)}
    else:
        result = {"chaos": chaos(args)}
    result["args"] = vars(args)
    path = h.save("chaos", result, args.json)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
