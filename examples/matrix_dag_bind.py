"""The seed's matrix DAG (matrix_dag.py) declared once with .bind() and
executed several times with different inputs, as with Ray's ray.dag. Each
execute() submits the three tasks; the refs between them are resolved to
arrays read zero-copy from shared memory."""

import time

import numpy as np

import shoal as ray
from shoal.dag import InputNode

ray.init()


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

for n in (250, 500, 1000):
    start = time.time()
    z = ray.get(dag.execute([n, n]))
    print(z.shape, f"in {time.time() - start:.3f} s")
    assert z.shape == (n, n)
