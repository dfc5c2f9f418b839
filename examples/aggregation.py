"""Seed example 3: aggregating values with a chain of adds (7 steps for 8
values) and with a tree of pairwise adds (3 levels), mixing plain values and
refs as arguments."""

import time

import shoal as ray

ray.init()


@ray.remote
def add(x, y):
    time.sleep(1)
    return x + y


# A chain: each add waits for the previous one.
start = time.time()
id1 = add.remote(1, 2)
id2 = add.remote(id1, 3)
id3 = add.remote(id2, 4)
id4 = add.remote(id3, 5)
id5 = add.remote(id4, 6)
id6 = add.remote(id5, 7)
id7 = add.remote(id6, 8)
result = ray.get(id7)
print("chain:", result, f"in {time.time() - start:.2f} s")

# A tree: pairs are added in parallel.
start = time.time()
values = [1, 2, 3, 4, 5, 6, 7, 8]
while len(values) > 1:
    values = values[2:] + [add.remote(values[0], values[1])]
result = ray.get(values[0])
print("tree:", result, f"in {time.time() - start:.2f} s")
assert result == 36
