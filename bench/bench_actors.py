"""Actor benchmarks under `ray microbenchmark`'s names, with Ray running the
same workloads in the same invocation when it is importable.

  1_1_actor_calls_sync             one actor: call, get, repeat             (calls/s)
  1_1_actor_calls_async            one actor: many calls, then get them     (calls/s)
  1_1_actor_calls_concurrent       one threaded actor (max_concurrency=16)  (calls/s)
  1_n_actor_calls_async            the driver calls n actors in turn        (calls/s)
  n_n_actor_calls_async            n tasks each call the n actors           (calls/s)
  1_1_async_actor_calls_sync       one asyncio actor: call, get, repeat     (calls/s)
  1_1_async_actor_calls_async      one asyncio actor: many calls, then get  (calls/s)
  actor_call_sync_p50_us           median round trip of a sync call         (us)

The floor of each row (bench/_floors.py, measured first in the same run) and
how close shoal comes to it ('of floor': 1.0 at the floor) stand beside it.

Usage: python bench/bench_actors.py [--quick] [--no-ray] [--no-floor] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _floors  # noqa: E402
import _harness as h  # noqa: E402

GOALS = {
    "1_1_actor_calls_async": ">= 150,000/s",
    "1_1_async_actor_calls_async": ">= 40,000/s",
    "actor_call_sync_p50_us": "<= 10 us",
}


def suite(ray, quick: bool, num_cpus: int) -> dict:
    out = {}

    @ray.remote
    class Actor:
        def small_value(self):
            return b"ok"

    @ray.remote
    class AsyncActor:
        async def small_value(self):
            return b"ok"

    n_async = 2000 if quick else 20000
    n_sync = 300 if quick else 3000

    a = Actor.remote()
    ray.get(a.small_value.remote())

    def sync(n):
        for _ in range(n):
            ray.get(a.small_value.remote())

    out["1_1_actor_calls_sync"] = h.rate(sync, n_sync, 3)
    samples = h.time_each(lambda: ray.get(a.small_value.remote()), n_sync)
    out["actor_call_sync_p50_us"] = statistics.median(samples) * 1e6

    def asynchronous(n):
        ray.get([a.small_value.remote() for _ in range(n)])

    out["1_1_actor_calls_async"] = h.rate(asynchronous, n_async, 3)

    c = Actor.options(max_concurrency=16).remote()
    ray.get(c.small_value.remote())
    out["1_1_actor_calls_concurrent"] = h.rate(
        lambda n: ray.get([c.small_value.remote() for _ in range(n)]), n_async // 2, 3)

    actors = [Actor.remote() for _ in range(num_cpus)]
    ray.get([x.small_value.remote() for x in actors])
    out["1_n_actor_calls_async"] = h.rate(
        lambda n: ray.get([actors[i % len(actors)].small_value.remote() for i in range(n)]), n_async, 3)

    @ray.remote
    def client(targets, n):
        ray.get([targets[i % len(targets)].small_value.remote() for i in range(n)])

    per_client = n_async // num_cpus

    def n_n(n):
        ray.get([client.remote(actors, per_client) for _ in range(num_cpus)])

    ray.get(client.remote(actors, 10))
    out["n_n_actor_calls_async"] = h.rate(n_n, 1, 3) * per_client * num_cpus

    aa = AsyncActor.remote()
    ray.get(aa.small_value.remote())
    out["1_1_async_actor_calls_sync"] = h.rate(
        lambda n: [ray.get(aa.small_value.remote()) for _ in range(n)], n_sync, 3)
    out["1_1_async_actor_calls_async"] = h.rate(
        lambda n: ray.get([aa.small_value.remote() for _ in range(n)]), n_async, 3)
    return out


def run(name: str, quick: bool, num_cpus: int) -> dict:
    if name == "shoal":
        import shoal as ray
    else:
        import ray  # type: ignore
    kwargs = {"num_cpus": num_cpus}
    if name == "ray":
        kwargs.update(include_dashboard=False, logging_level="ERROR")
    ray.init(**kwargs)
    try:
        return suite(ray, quick, num_cpus)
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--no-floor", action="store_true", help="skip measuring the floors")
    ap.add_argument("--json")
    args = ap.parse_args()
    floors = {} if args.no_floor else _floors.measure(args.quick)
    row_floors = _floors.row_floors(floors, args.num_cpus) if floors else {}
    results = {"shoal": run("shoal", args.quick, args.num_cpus)}
    if not args.no_ray:
        try:
            import ray  # noqa: F401

            results["ray"] = run("ray", args.quick, args.num_cpus)
        except ImportError:
            pass
    rows = []
    for k, v in results["shoal"].items():
        r = results.get("ray", {}).get(k)
        lower = k.endswith("_us")
        floor, how = row_floors.get(k, (None, None))
        rows.append({"name": k, "shoal": v, "floor": floor, "of floor": _floors.of_floor(k, v, floor), "ray": r,
                     "x": (r / v if lower else v / r) if r else None, "goal": GOALS.get(k, ""), "floor_how": how})
    print(f"Actor calls, {args.num_cpus} CPUs ('x ray': how many times better than Ray; "
          "'of floor': 1.0 at the floor)")
    print(h.table(rows, [("name", "benchmark"), ("shoal", "shoal"), ("floor", "floor"), ("of floor", "of floor"),
                         ("ray", "ray 2.60"), ("x", "x ray"), ("goal", "goal")]))
    if floors:
        print("\nFloors measured in this run: " + ", ".join(f"{k} {v:,.2f}" for k, v in floors.items()))
        for key in sorted({r["floor_how"] for r in rows if r["floor_how"]}):
            print(f"  {key}: {_floors.FLOOR_NOTES[key]}")
    path = h.save("bench_actors", {"results": results, "floors": floors, "rows": rows}, args.json)
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
