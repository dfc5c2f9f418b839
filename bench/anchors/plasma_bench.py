"""The store rows on Plasma (pyarrow 11.0's pyarrow.plasma and plasma_store).

Usage: PYTHON plasma_bench.py SIZES [quick]   (SIZES: bytes, comma-separated)
"""

from __future__ import annotations

import os
import shutil
import warnings
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _rows import main, measure  # noqa: E402


def run(sizes: list[int], quick: bool) -> dict:
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (it is: the last release that has it)
        import pyarrow.plasma as plasma

    folder = tempfile.mkdtemp(prefix="bench-plasma-")
    sock = os.path.join(folder, "plasma.sock")
    server = subprocess.Popen([shutil.which("plasma_store", path=os.path.dirname(sys.executable)),
                               "-m", str(3 << 30), "-s", sock], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # (its client's retries print to stderr too)
    try:
        client = plasma.connect(sock, num_retries=200)  # (the client's own wait for the server's socket)

        def create_seal(size):
            oid = plasma.ObjectID(os.urandom(20))
            buf = client.create(oid, size)
            client.seal(oid)
            del buf
            return oid

        def get(oid):
            return client.get_buffers([oid], timeout_ms=0)[0]

        def put(array):
            oid = plasma.ObjectID(os.urandom(20))
            buf = client.create(oid, array.nbytes)
            np.frombuffer(buf, dtype=np.uint8)[:] = array
            client.seal(oid)
            del buf
            return oid

        def delete(oid):
            client.delete([oid])

        return measure(sizes, quick, create_seal, get, put, delete)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(run)
