"""The seed examples: as the scripts in examples/ (run unchanged, as a user
would), and inline with short sleeps."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script", ["sleep_tasks.py", "matrix_dag.py", "aggregation.py", "quickstart.py"])
def test_example_scripts_run_unchanged(script):
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_spilling_example_shows_where_objects_are_and_who_holds_them():
    proc = subprocess.run([sys.executable, str(EXAMPLES / "spilling.py")], capture_output=True, text=True,
                          timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for expected in ("fallback", "spilled", "reading it", "--- actor Keeper", "(contains a ref)",
                     "--- Totals ---", "Spiller:"):
        assert expected in out, expected


def test_message_actor_example_shows_progress_as_it_goes():
    """It prints a line a round, flushed, so that even through a pipe it
    does not look like a hang: the first round shows while it still runs."""
    import selectors

    env = {**os.environ, "SHOAL_EXAMPLE_ROUNDS": "3"}
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "message_actor.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            lines = []
            while not any(line.startswith("round 1/3") for line in lines):
                assert sel.select(timeout=60), f"no progress line within 60 s: {lines}"
                line = proc.stdout.readline()
                assert line, f"the example ended without progress: {lines} {proc.stderr.read()}"
                lines.append(line)
        assert proc.poll() is None  # two more rounds of a second each remain
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert [line.split(",")[0] for line in (lines + out.splitlines()) if line.startswith("round")] == [
        "round 1/3", "round 2/3", "round 3/3"]


def test_parallel_sleeps(ray):
    @ray.remote
    def f(x):
        time.sleep(0.3)
        return x

    t = time.monotonic()
    assert ray.get([f.remote(i) for i in range(4)], timeout=30) == [0, 1, 2, 3]
    assert time.monotonic() - t < 0.3 * 4  # in parallel (2 CPUs: two rounds)


def test_matrix_dag(ray):
    @ray.remote
    def create_matrix(size):
        return np.random.normal(size=size)

    @ray.remote
    def multiply_matrices(x, y):
        return np.dot(x, y)

    x_id = create_matrix.remote([200, 200])
    y_id = create_matrix.remote([200, 200])
    z = ray.get(multiply_matrices.remote(x_id, y_id), timeout=60)
    assert np.allclose(z, ray.get(x_id) @ ray.get(y_id))


def test_aggregation_tree_mixes_values_and_refs(ray):
    @ray.remote
    def add(x, y):
        time.sleep(0.05)
        return x + y

    values = [1, 2, 3, 4, 5, 6, 7, 8]
    while len(values) > 1:
        values = values[2:] + [add.remote(values[0], values[1])]
    assert ray.get(values[0], timeout=30) == 36
