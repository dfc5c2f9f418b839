"""Dask on shoal: each Dask task a shoal task, chunks in the object store.

    import dask, dask.array as da
    from shoal.util.dask import enable_dask_on_shoal, shoal_dask_get

    dask.compute(x, scheduler=shoal_dask_get)   # one computation
    enable_dask_on_shoal()                       # every computation (dask.config)

Chunks travel as store objects: a task gets the chunks it depends on as
zero-copy, read-only views, and its result stays in the store until the
tasks that need it have run. ``persist()`` keeps results as refs in the
store, which later computations use without a copy. Dask annotations set
task options: ``resources`` (CPU and GPU become num_cpus and num_gpus),
``num_cpus``, ``num_gpus``, ``retries`` (retried on exceptions too, as
Dask retries), and ``shoal_remote_args`` (or Ray's ``ray_remote_args``):
any task option.

Ray's names work too (ray_dask_get, enable_dask_on_ray,
disable_dask_on_ray), for programs that ``import shoal as ray``.
"""

from __future__ import annotations

from shoal.util.dask.scheduler import (
    disable_dask_on_shoal, enable_dask_on_shoal, shoal_dask_get, shoal_dask_persist,
)

#: Ray's names (ray.util.dask), for programs that import shoal as ray.
ray_dask_get = shoal_dask_get
enable_dask_on_ray = enable_dask_on_shoal
disable_dask_on_ray = disable_dask_on_shoal
ray_dask_persist = shoal_dask_persist

__all__ = [
    "disable_dask_on_ray", "disable_dask_on_shoal", "enable_dask_on_ray", "enable_dask_on_shoal", "ray_dask_get",
    "ray_dask_persist", "shoal_dask_get", "shoal_dask_persist",
]
