"""The object store on its own: one process puts a large array, a second
process reads it without copying."""

import subprocess
import sys
import time

import numpy as np

from shoal.store import ObjectStore

READER = """
import sys, time
import numpy as np
from shoal.store import ObjectStore
store = ObjectStore.attach(int(sys.argv[1]))
t = time.perf_counter()
arr = store.get(bytes.fromhex(sys.argv[2]))
took = (time.perf_counter() - t) * 1e6
print(f"reader: got {arr.nbytes >> 20} MiB in {took:.0f} us, sum={arr.sum():.0f}, writeable={arr.flags.writeable}")
"""

with ObjectStore.open(1 << 30) as store:
    data = np.ones(64 << 20 >> 3)  # 64 MiB of float64
    t = time.perf_counter()
    oid = store.put(data)
    print(f"writer: put {data.nbytes >> 20} MiB in {(time.perf_counter() - t) * 1e3:.1f} ms")
    subprocess.run([sys.executable, "-c", READER, str(store.fd), oid.hex()], pass_fds=[store.fd], check=True)
    print("store:", store.statistics())
