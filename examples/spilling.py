"""Data larger than the object store: objects spill to disk and come back,
and memory_summary() shows where each one is and who holds it.
Runs in about a second (set SHOAL_RECORD_REF_CREATION_SITES=1 to see
where each ref was made)."""

import numpy as np

import shoal as ray

ray.init(num_cpus=2, object_store_memory=64 << 20)  # a 64 MiB store


@ray.remote
def total(arrays):
    return sum(float(ray.get(a).sum()) for a in arrays)  # refs in a list are not resolved for us


@ray.remote
class Keeper:
    def keep(self, refs):
        self.refs = refs

    def kept(self):
        return len(self.refs)


batches = [ray.put(np.full(2 << 20, k, dtype=np.float64)) for k in range(6)]  # 6 x 16 MiB
assert ray.get(total.remote(batches)) == sum(k * float(2 << 20) for k in range(6))  # spilled ones too
big = ray.put(np.zeros(10 << 20))  # 80 MiB: larger than the whole store, written to a file
keeper = Keeper.remote()
keeper.keep.remote([ray.put(b"x" * 100_000)])  # an actor holds this one
assert ray.get(keeper.kept.remote()) == 1
box = ray.put({"inner": ray.put(np.arange(1000))})  # a ref inside a stored object
view = ray.get(batches[-1])  # a live array pins its object in memory
print(ray.util.memory_summary())
ray.shutdown()
