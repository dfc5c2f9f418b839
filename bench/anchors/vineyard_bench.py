"""The store rows on vineyard (vineyardd, and its Python client's blobs).

Usage: PYTHON vineyard_bench.py SIZES [quick]   (SIZES: bytes, comma-separated)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _rows import main, measure  # noqa: E402


def run(sizes: list[int], quick: bool) -> dict:
    import numpy as np
    import vineyard

    folder = tempfile.mkdtemp(prefix="bench-vineyard-")
    sock = os.path.join(folder, "vineyard.sock")
    daemon = os.path.join(os.path.dirname(vineyard.__file__), "bdist", "vineyardd")
    # Its log says when it listens: wait for that line (no RPC port: IPC only).
    server = subprocess.Popen([daemon, f"--socket={sock}", "--size=3Gi", "--meta=local", "--rpc=false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in server.stderr:
            if "for IPC" in line:
                break
        else:
            raise RuntimeError("vineyardd exited before it listened")
        threading.Thread(target=server.stderr.read, daemon=True).start()  # keep its pipe drained
        client = None
        for attempt in range(100_000):  # listen() follows that line at once
            try:
                client = vineyard.connect(sock)
                break
            except Exception:
                if server.poll() is not None:
                    raise RuntimeError("vineyardd exited at start") from None

        def create_seal(size):
            return client.create_blob(size).seal(client).id

        def get(oid):
            return memoryview(client.get_blob(oid))

        def put(array):
            builder = client.create_blob(array.nbytes)
            np.frombuffer(memoryview(builder), dtype=np.uint8)[:] = array
            return builder.seal(client).id

        def delete(oid):
            client.delete(oid)

        return measure(sizes, quick, create_seal, get, put, delete)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(run)
