"""Seed example 1: four tasks in parallel. With 4 or more CPUs this takes
about 1 s; with 2 (the default on a 2-core machine) about 2 s."""

import time

import shoal as ray

ray.init()


@ray.remote
def f(x):
    time.sleep(1)
    return x


start = time.time()
results = ray.get([f.remote(i) for i in range(4)])
print(results, f"in {time.time() - start:.2f} s")
assert results == [0, 1, 2, 3]
