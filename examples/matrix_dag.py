"""Seed example 2: a DAG. The refs x_id and y_id are passed to another task;
the runtime resolves them to arrays (read zero-copy from shared memory)
before multiply_matrices runs."""

import time

import numpy as np

import shoal as ray

ray.init()


@ray.remote
def create_matrix(size):
    return np.random.normal(size=size)


@ray.remote
def multiply_matrices(x, y):
    return np.dot(x, y)


start = time.time()
x_id = create_matrix.remote([1000, 1000])
y_id = create_matrix.remote([1000, 1000])
z_id = multiply_matrices.remote(x_id, y_id)
z = ray.get(z_id)
print(z.shape, f"in {time.time() - start:.3f} s")
assert z.shape == (1000, 1000)
