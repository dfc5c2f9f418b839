"""DAGs with .bind() (shoal.dag), as Ray's ray.dag: functions, actors,
inputs, several outputs, and many executions of one DAG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fns(ray):
    @ray.remote
    def add(x, y=0):
        return x + y

    @ray.remote
    def kinds(values):
        return [type(v).__name__ for v in values]

    @ray.remote
    class Accumulator:
        def __init__(self, start):
            self.total = start
            self.calls = 0

        def add(self, x):
            self.total += x
            self.calls += 1
            return self.total, self.calls

    return ray, add, kinds, Accumulator


def test_function_dag_executes_many_times_with_different_inputs(fns):
    ray, add, _, _ = fns
    from shoal.dag import InputNode

    with InputNode() as inp:
        dag = add.bind(add.bind(inp, 1), add.bind(inp, 2))
    refs = [dag.execute(i) for i in range(5)]
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    assert ray.get(refs, timeout=60) == [2 * i + 3 for i in range(5)]
    assert ray.get(add.bind(1, y=2).execute(), timeout=60) == 3


def test_input_node_index_attribute_and_keyword_access(fns):
    ray, add, _, _ = fns
    from shoal.dag import InputNode

    with InputNode() as inp:
        by_index = add.bind(inp[0], inp[1])
        by_name = add.bind(inp.x, y=inp.y)
        by_key = add.bind(inp["k"], 1)
    assert ray.get(by_index.execute(1, 2), timeout=60) == 3
    assert ray.get(by_name.execute(x=1, y=5), timeout=60) == 6
    assert ray.get(by_key.execute(k=4), timeout=60) == 5
    # One argument: indexing and attributes apply to it, as in Ray.
    assert ray.get(by_key.execute({"k": 10}), timeout=60) == 11
    with pytest.raises(ValueError, match="picks? one|pick one"):
        with InputNode() as whole:
            add.bind(whole).execute(1, 2)
    with pytest.raises(ValueError, match="reads input 'x'"):
        by_name.execute(1, 2)


def test_shared_nodes_run_once_per_execute_and_nested_nodes_stay_refs(fns):
    ray, add, kinds, _ = fns
    from shoal.dag import InputNode

    with InputNode() as inp:
        shared = add.bind(inp, 1)
        dag = add.bind(shared, shared)
    assert ray.get(dag.execute(1), timeout=60) == 4
    # A node inside a list reaches its task as a ref, as refs in .remote() do.
    assert ray.get(kinds.bind([add.bind(1, 2), 3]).execute(), timeout=60) == ["ObjectRef", "int"]


def test_actor_nodes_new_actor_each_execute_and_live_handles(fns):
    ray, _, _, Accumulator = fns
    from shoal.dag import InputNode, MultiOutputNode

    with InputNode() as inp:
        acc = Accumulator.bind(10)
        dag = MultiOutputNode([acc.add.bind(inp), acc.add.bind(inp)])
    first = dag.execute(1)
    assert isinstance(first, list)
    # Both method nodes call the one actor that this execute() started.
    assert sorted(ray.get(first, timeout=60)) == [(11, 1), (12, 2)]
    assert sorted(ray.get(dag.execute(1), timeout=60)) == [(11, 1), (12, 2)]  # a new actor
    handle = Accumulator.remote(100)
    with InputNode() as inp:
        live = handle.add.bind(inp)
    assert ray.get(live.execute(1), timeout=60) == (101, 1)
    assert ray.get(live.execute(1), timeout=60) == (102, 2)  # the same actor keeps its state


def test_options_and_errors(fns):
    ray, add, _, _ = fns
    from shoal.dag import InputNode

    assert ray.get(add.options(num_cpus=0.5).bind(1, 1).execute(), timeout=60) == 2
    with InputNode() as inp:
        dag = add.bind(inp, "text")
    with pytest.raises(TypeError):
        ray.get(dag.execute(1), timeout=60)
    with pytest.raises(NotImplementedError, match="compiled graphs"):
        dag.experimental_compile()


def test_matrix_dag_with_bind(ray):
    from shoal.dag import InputNode

    @ray.remote
    def create_matrix(size):
        return np.random.normal(size=size)

    @ray.remote
    def multiply_matrices(x, y):
        return np.dot(x, y)

    with InputNode() as size:
        x = create_matrix.bind(size)
        y = create_matrix.bind(size)
        dag = multiply_matrices.bind(x, y)
    for n in (50, 200):
        assert ray.get(dag.execute([n, n]), timeout=60).shape == (n, n)


def test_matrix_dag_example_runs():
    script = Path(__file__).resolve().parent.parent / "examples" / "matrix_dag_bind.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("in ") == 3 and "(1000, 1000)" in proc.stdout
