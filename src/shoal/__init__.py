"""shoal: Ray's API for one machine, over a shared-memory object store.

    import shoal as ray
    ray.init()

    @ray.remote
    def f(x):
        return x * 2

    ray.get([f.remote(i) for i in range(4)])   # [0, 2, 4, 6]
"""

from shoal import actor, dag, exceptions, job_config, util
from shoal.api import (
    available_resources, cancel, cluster_resources, get, get_actor, get_gpu_ids, get_runtime_context, init,
    is_initialized, kill, method, nodes, put, remote, shutdown, timeline, wait,
)
from shoal.objectref import DynamicObjectRefGenerator, ObjectRef, ObjectRefGenerator

__version__ = "0.1.0"

__all__ = [
    "DynamicObjectRefGenerator", "ObjectRef", "ObjectRefGenerator", "actor", "available_resources", "cancel", "cluster_resources", "dag",
    "exceptions", "get", "get_actor", "get_gpu_ids", "get_runtime_context", "init", "is_initialized", "job_config", "kill", "method", "nodes",
    "put", "remote", "shutdown", "timeline", "util", "wait",
]
