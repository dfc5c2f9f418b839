"""shoal in one page: tasks, a DAG of refs, put/get of a large array read
zero-copy by the workers, and a task error that keeps its type."""

import time

import numpy as np

import shoal as ray

start = time.perf_counter()
ray.init()


@ray.remote
def square(x):
    return x * x


@ray.remote
def total(values):
    return sum(values)


print("squares:", ray.get([square.remote(i) for i in range(8)]),
      f"(first results {time.perf_counter() - start:.3f} s after init)")

refs = [square.remote(i) for i in range(100)]
print("sum of 100 squares via a dependent task:", ray.get(total.remote(ray.get(refs))))

big = ray.put(np.ones(100_000_000, dtype=np.uint8))  # 100 MB, stored once


@ray.remote
def count(arr):
    return int(arr.sum()), arr.flags.writeable  # a read-only view of shared memory


print("4 tasks read the same 100 MB array:", ray.get([count.remote(big) for _ in range(4)]))


@ray.remote
def fails():
    raise ValueError("raised in a worker")


try:
    ray.get(fails.remote())
except ValueError as e:
    print("caught the task's ValueError:", str(e).splitlines()[-1])

ray.shutdown()
