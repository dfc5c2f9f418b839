"""The public API, with Ray's names, signatures and semantics.

Functions that need a runtime start one if there is none (as Ray does);
``init`` starts one explicitly. In a worker process, the same functions act
on the runtime of the driver that started it.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from shoal import exceptions as exc
from shoal import objectref, runtime
from shoal.objectref import ObjectRef, ObjectRefGenerator
from shoal.options import env_vars, warn_once
from shoal.remote_function import RemoteFunction
from shoal.words import a_type

#: Ray's init keywords that change nothing shoal does, silently accepted:
#: its own logging and temp files, and settings for a cluster that shoal
#: never connects to (address= already warns).
_HARMLESS_INIT = {
    "configure_logging", "logging_level", "logging_format", "logging_config",
    "_temp_dir", "_node_name", "_node_ip_address", "_metrics_export_port", "_redis_password",
    "_redis_username", "_skip_env_hook", "_enable_object_reconstruction",
    "_disable_object_store_spilling", "_driver_object_store_memory",
}

#: Ray's init keywords whose effect shoal lacks: a warning (once) says so.
_UNIMPLEMENTED_INIT = {
    "labels", "enable_resource_isolation",
    "cgroup_path", "system_reserved_cpu", "system_reserved_memory", "proxy_server_url",
    "_plasma_directory", "_memory",
    "_tracing_startup_hook", "storage", "runtime_env_setup_hook",
}


#: _system_config keys that shoal honours (the others warn once).
_SPILL_SYSTEM_CONFIG = {
    "object_spilling_config", "object_spilling_threshold", "min_spilling_size", "max_io_workers",
    "automatic_object_spilling_enabled",
    # the memory monitor's (config.memory_monitor_config)
    "memory_usage_threshold", "memory_monitor_refresh_ms", "min_memory_free_bytes", "task_oom_retry_delay_base_ms",
}


def _check_init_kwargs(kwargs: dict) -> None:
    system_config = kwargs.get("_system_config")
    if system_config is not None:
        if not isinstance(system_config, dict):
            raise TypeError(f"_system_config must be a dict, not {type(system_config).__name__}")
        for key in sorted(set(system_config) - _SPILL_SYSTEM_CONFIG):
            warn_once(f"init:_system_config:{key}", f"shoal does not implement _system_config[{key!r}]; "
                                                     f"it is ignored")
    for key, value in kwargs.items():
        if key in ("_system_config", "object_spilling_directory", "include_dashboard", "dashboard_host",
                   "dashboard_port", "job_config"):
            continue
        if key in _UNIMPLEMENTED_INIT:
            warn_once(f"init:{key}", f"shoal does not implement init({key}=...); it is ignored")
        elif key not in _HARMLESS_INIT:
            raise TypeError(f"init() got an unexpected keyword argument {key!r}")


class RayContext(dict):
    """What init() returns: information about the runtime (and, used as a
    context manager, shuts it down at the end of the block)."""

    def __init__(self, info: dict):
        super().__init__(info)
        self.address_info = info
        self.dashboard_url = info.get("webui_url")
        self.python_version = info.get("python_version")

    def __enter__(self) -> "RayContext":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        shutdown()

    def disconnect(self) -> None:
        shutdown()


def init(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
         resources: dict | None = None, object_store_memory: int | None = None, local_mode: bool = False,
         ignore_reinit_error: bool = False, log_to_driver: bool | None = True, namespace: str | None = None,
         runtime_env: dict | None = None, **kwargs: Any) -> RayContext:
    """Start shoal in this process (the driver).

    Args:
        address: None or "local": shoal's runtime on this machine.
            "auto", "host:port" or "ray://host:port": run on that Ray
            cluster, through Ray (needs pip install "shoal[ray]"; see
            docs/cluster.md). None with RAY_ADDRESS set: that cluster.
            Ray's other init keywords then go to ray.init.
        num_cpus: logical CPUs (default: the machine's); also the number of
            worker processes kept running.
        num_gpus: logical GPUs (default: those CUDA_VISIBLE_DEVICES lists).
        resources: custom logical resources, {name: amount}.
        object_store_memory: store size in bytes (default: 30% of memory, at
            most what /dev/shm has free).
        local_mode: run every task in this process, in order, when it is
            submitted (for pdb and print debugging).
        ignore_reinit_error: a second init() returns instead of raising.
        log_to_driver: forward what workers print, prefixed with the task
            (None: the default, True).
        namespace: the namespace of named actors.
        runtime_env: {"env_vars": {name: value}} set in every worker and
            actor process (other fields warn and are ignored).
        object_spilling_directory (keyword): where objects go when the
            store is full (a path or a list of paths; each gets a folder of
            this runtime, removed at shutdown). Default: the system's
            temporary directory. None: no spilling (a full store raises
            ObjectStoreFullError).
        include_dashboard (keyword): serve the live dashboard (needs the
            dashboard extra: pip install "shoal[dashboard]"). Off by
            default (None and False), so init() opens no TCP port.
        dashboard_host (keyword): the address it listens on (127.0.0.1).
        dashboard_port (keyword): its port (8265; a taken port picks a
            free one: see the returned context's dashboard_url).
        _system_config (keyword): Ray's; "object_spilling_config",
            "object_spilling_threshold" (default 0.8), "min_spilling_size",
            "max_io_workers" and "automatic_object_spilling_enabled" apply,
            and the memory monitor's "memory_usage_threshold" (default
            0.95: above that share of the machine's memory in use, a worker
            is killed and its task fails with OutOfMemoryError or is
            retried), "memory_monitor_refresh_ms" (250; 0 turns it off),
            "min_memory_free_bytes" and "task_oom_retry_delay_base_ms".
        kwargs: Ray's other init keywords. Those that change nothing here
            (logging, temp directory, ...) are accepted silently; those
            shoal does not implement (labels, ...) warn once.
            job_config (keyword): a shoal.job_config.JobConfig (Ray's
            ray.job_config.JobConfig); its runtime_env and ray_namespace
            apply where runtime_env and namespace are not given.
    Raises:
        RuntimeError: already initialized (and not ignore_reinit_error).
        ClusterUnreachableError: no Ray cluster answers at the address.
        ImportError: a cluster address without Ray installed.
        TypeError: a keyword that Ray's init does not have either.
    """
    if objectref.current() is not None:
        if ignore_reinit_error:
            return RayContext(_info())
        raise RuntimeError(
            "Maybe you called ray.init twice by accident? This error can be suppressed by "
            "passing in 'ignore_reinit_error=True' or by calling 'ray.shutdown()' prior to "
            "'ray.init()'.")
    from shoal import cluster

    ray_address = cluster.address_to_use(address)
    if local_mode:
        if ray_address is not None:
            warn_once("init:local_mode", f"local_mode=True runs every task in this process: the Ray "
                      f"cluster at {ray_address!r} is not used")
    elif ray_address is not None or cluster.inside_ray():
        if log_to_driver is None:
            log_to_driver = True
        ray_kwargs = {k: v for k, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus), ("resources", resources),
                                        ("object_store_memory", object_store_memory)) if v is not None}
        runtime.start(cluster=dict(address=ray_address, namespace=namespace, runtime_env=runtime_env,
                                   log_to_driver=log_to_driver, init_kwargs={**ray_kwargs, **kwargs}))
        return RayContext(_info())
    _check_init_kwargs(kwargs)
    runtime_env, namespace = _apply_job_config(kwargs.get("job_config"), runtime_env, namespace)
    if log_to_driver is None:  # Ray's default
        log_to_driver = True
    env = env_vars(runtime_env, "init()")
    from shoal import config

    spilling = config.spill_config(kwargs.get("object_spilling_directory", config._UNSET),
                                   kwargs.get("_system_config"))
    memory_monitor = config.memory_monitor_config(kwargs.get("_system_config"))
    dashboard = None
    if kwargs.get("include_dashboard"):
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            raise ImportError('init(include_dashboard=True) needs aiohttp: pip install "shoal[dashboard]"') from None
        dashboard = (kwargs.get("dashboard_host") or "127.0.0.1", int(kwargs.get("dashboard_port") or 8265))
    runtime.start(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                  object_store_memory=object_store_memory, log_to_driver=log_to_driver,
                  namespace=namespace, local_mode=local_mode, env_vars=env, spilling=spilling,
                  **({} if local_mode else {"memory_monitor": memory_monitor}),
                  **({"dashboard": dashboard} if dashboard else {}))
    return RayContext(_info())


def _apply_job_config(job_config: Any, runtime_env: dict | None,
                      namespace: str | None) -> tuple[dict | None, str | None]:
    """The runtime_env and namespace init() uses: its own arguments win, as
    in Ray, then those of a JobConfig. Fields shoal lacks warn once."""
    if job_config is None:
        return runtime_env, namespace
    from shoal.job_config import JobConfig

    if not isinstance(job_config, JobConfig):
        warn_once("init:job_config", f"init(job_config=...) takes a shoal.job_config.JobConfig, not "
                                     f"{a_type(job_config)}; it is ignored")
        return runtime_env, namespace
    for name in job_config.ignored_fields():
        warn_once(f"init:job_config:{name}", f"shoal does not implement JobConfig.{name}; it is ignored")
    if runtime_env is None:
        runtime_env = job_config.runtime_env
    if namespace is None:
        namespace = job_config.ray_namespace
    return runtime_env, namespace


def _info() -> dict:
    import sys

    from shoal import config

    rt = objectref.current()
    if getattr(rt, "cluster", False):
        return rt.info()
    return {
        # Ray's key of the address to join; a shoal runtime cannot be joined
        # from another process, and init("local") there starts one of its own.
        "address": "local",
        "node_ip_address": config.NODE_IP_ADDRESS,
        "session_name": getattr(rt, "session", ""),
        "namespace": getattr(rt, "namespace", None),
        "python_version": ".".join(map(str, sys.version_info[:3])),
        "node_id": getattr(rt, "node_id", ""),
        "webui_url": rt.dashboard.url.removeprefix("http://") if getattr(rt, "dashboard", None) else None,
    }


def shutdown(*, wait_for_processes: bool = False, _exiting_interpreter: bool = False) -> None:
    """Stop the runtime: its worker processes end and its objects are freed.
    Calls on refs of the old runtime raise RuntimeClosedError.

    Args (Ray's; accepted for compatibility):
        wait_for_processes: wait until the runtime's processes have exited.
            Shoal always does, so this changes nothing.
        _exiting_interpreter: called from an atexit hook; changes nothing.
    """
    runtime.stop()


def is_initialized() -> bool:
    """True if a runtime is running in (or for) this process."""
    return objectref.current() is not None


def _auto_init() -> None:
    """Start a runtime on first use, as Ray does, unless auto-init is off
    (RAY_ENABLE_AUTO_CONNECT=0), where the call raises RaySystemError."""
    from shoal import config

    if not config.auto_init_enabled():
        raise exc.RaySystemError("shoal has not been started yet and starting it on first use is off "
                                 "(RAY_ENABLE_AUTO_CONNECT=0): call init() first")
    init()


def _ctx():
    ctx = objectref.current()
    if ctx is None:
        _auto_init()
        ctx = objectref.current()
    return ctx


def get(object_refs: Any, *, timeout: float | None = None) -> Any:
    """The value of a ref, or the values of a list of refs (same order).
    Arrays in the values are zero-copy views of shared memory, read-only:
    ``.copy()`` one to write to it.

    Waits for each object until `timeout` seconds in all (None, a negative
    number or infinity: forever, as in Ray; 0: only what is ready now).
    Raises the task's error (an instance of RayTaskError and of the task's
    own exception type), GetTimeoutError, WorkerCrashedError,
    TaskCancelledError; ValueError if `timeout` is not a number.
    """
    ctx = _ctx()
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout:
            raise ValueError(f"timeout must be None or a number of seconds, not {timeout!r}")
        if timeout < 0 or timeout == float("inf"):  # Ray waits without limit for both
            timeout = None
    if isinstance(object_refs, ObjectRef):
        return ctx.get([object_refs], timeout)[0]
    if isinstance(object_refs, ObjectRefGenerator):
        raise TypeError("get() of a generator: iterate it and get() each ref it yields")
    if not isinstance(object_refs, list):  # as Ray: a tuple too is a ValueError
        raise ValueError(
            f"Invalid type of object refs, {type(object_refs)}, is given. 'object_refs' must "
            f"either be an ObjectRef or a list of ObjectRefs.")
    for r in object_refs:
        if not isinstance(r, ObjectRef):
            raise TypeError(f"get() expects a list of ObjectRefs; it holds {a_type(r)}")
    return ctx.get(list(object_refs), timeout)


def put(value: Any, *, _owner: Any = None) -> ObjectRef:
    """Store `value` (immutable from now on) and return a ref to it."""
    return _ctx().put(value)


def wait(object_refs: list, *, num_returns: int = 1, timeout: float | None = None,
         fetch_local: bool = True) -> tuple[list, list]:
    """Wait until `num_returns` of the refs are ready or `timeout` seconds
    pass (None: no limit). Returns (ready, not_ready), each in input order.
    A streaming generator in the list is ready when its next item is (or
    it has ended)."""
    if not isinstance(object_refs, list):  # as Ray: a tuple is refused too
        raise TypeError(f"wait() expected a list of ObjectRefs or ObjectRefGenerators, got "
                        f"{type(object_refs)}")
    refs = list(object_refs)
    for r in refs:
        if not isinstance(r, (ObjectRef, ObjectRefGenerator)):
            raise TypeError(f"wait() expects a list of ObjectRefs; it holds {a_type(r)}")
    if len(set(refs)) != len(refs):
        raise ValueError("wait() requires a list of unique ObjectRefs")
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be None or >= 0 seconds, not {timeout!r}")
    if not refs:  # as Ray: before num_returns is checked against the list
        return [], []
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns < 1:
        raise ValueError(f"num_returns must be an int >= 1, not {num_returns!r}")
    if num_returns > len(refs):
        raise ValueError(
            f"num_returns ({num_returns}) cannot be larger than the number of refs ({len(refs)})")
    return _ctx().wait(refs, num_returns, timeout)


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that returns `object_ref` (or the generator task of
    an ObjectRefGenerator): dropped if not started; interrupted with
    KeyboardInterrupt if running (force: its worker is killed). get() then
    raises TaskCancelledError. recursive (the default, as in Ray): the tasks
    it submitted, queued or running, are cancelled too and free their
    resources; recursive=False leaves them. A ref made by put() has no
    task: nothing happens, as in Ray."""
    if type(object_ref) is ObjectRefGenerator:  # (a Ray generator on a cluster is Ray's to cancel)
        object_ref = object_ref._end
    if not isinstance(object_ref, (ObjectRef, ObjectRefGenerator)):
        raise TypeError(f"cancel() expects an ObjectRef, not {type(object_ref).__name__}")
    _ctx().cancel(object_ref, force, recursive)


def remote(*args: Any, **kwargs: Any) -> Any:
    """Make a function a task, or a class an actor: ``@remote``,
    ``@remote(num_cpus=2, ...)`` or ``remote(f)``."""
    if len(args) == 1 and not kwargs and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("remote() takes a function or class, or only keyword options")
    if not kwargs:  # @remote(): as in Ray, either no parentheses or some options
        raise TypeError("@remote() needs options, e.g. @remote(num_cpus=2); without any, "
                        "write @remote without parentheses")
    return lambda fn: _make_remote(fn, kwargs)


def _make_remote(target: Any, options: dict) -> Any:
    if inspect.isclass(target):
        from shoal.actor import ActorClass

        return ActorClass(target, options)
    return RemoteFunction(target, options)


def get_actor(name: str, namespace: str | None = None):
    """The handle of a named actor (ValueError if there is none)."""
    from shoal.actor import get_actor as _get_actor

    return _get_actor(name, namespace)


def kill(actor, *, no_restart: bool = True) -> None:
    """Kill an actor's process now (see actor.kill)."""
    from shoal.actor import kill as _kill

    _kill(actor, no_restart=no_restart)


def method(*args: Any, **kwargs: Any) -> Any:
    """Options for an actor method: ``@method(num_returns=2)``."""
    from shoal.actor import method as _method

    return _method(*args, **kwargs)


class RuntimeContext:
    """Facts about the current process's place in the runtime (Ray's
    ray.get_runtime_context())."""

    def __init__(self, ctx):
        self._ctx = ctx

    def get_job_id(self) -> str:
        return getattr(self._ctx, "session", "")

    def get_node_id(self) -> str:
        return getattr(self._ctx, "node_id", "") or ""

    def get_worker_id(self) -> str:
        """56 hex digits, as Ray's: the job id, then the process's number
        in it (0: the driver)."""
        return getattr(self._ctx, "session", "").ljust(8, "0") + f"{getattr(self._ctx, 'wid', 0):048x}"

    def get_task_id(self) -> str | None:
        here = getattr(self._ctx, "task_id_here", None)
        tid = here() if here is not None else getattr(self._ctx, "current_task_id", None)
        return tid.hex() if tid else None

    def get_task_name(self) -> str | None:
        return getattr(self._ctx, "current_name", None) or None

    def get_actor_id(self) -> str | None:
        aid = getattr(self._ctx, "actor_id", None)
        return aid.hex() if aid else None

    @property
    def namespace(self) -> str:
        return getattr(self._ctx, "namespace", "")

    @property
    def current_actor(self):
        """The handle of the actor this code runs in."""
        aid = getattr(self._ctx, "actor_id", None)
        if aid is None:
            raise RuntimeError("current_actor is only available inside an actor")
        from shoal.actor import ActorHandle

        # Not counted: an actor holding a handle to itself must still end
        # when every other handle is gone.
        return ActorHandle(aid, self._ctx.actor_info, None)

    def get_placement_group_id(self) -> str | None:
        """The id (hex) of the placement group the running task or actor is
        in (None outside any)."""
        where = getattr(self._ctx, "placement", None)
        return where[0] if where else None

    def get_actor_name(self) -> str | None:
        """The name of the actor this code runs in (None: unnamed, or not in an actor)."""
        return getattr(self._ctx, "actor_name", None)

    def get_assigned_resources(self) -> dict:
        """The logical resources of the running task, e.g. {"CPU": 1.0}
        ({} in the driver and in actors that hold none)."""
        return dict(getattr(self._ctx, "assigned", None) or {})

    def get_accelerator_ids(self) -> dict:
        return {"GPU": [str(g) for g in get_gpu_ids()]}

    def is_canceled(self) -> bool:
        """Whether cancel() was called for the running task, or for the
        running call of a sync or threaded actor (which cancel() does not
        interrupt, as in Ray: it may check this and return early)."""
        ctx = self._ctx
        if getattr(ctx, "is_async_actor", False):  # its calls get CancelledError instead, as in Ray
            raise RuntimeError("This method is not supported in an async actor.")
        if getattr(ctx, "is_actor", False):
            return ctx.call_cancelled()
        check = getattr(ctx, "cancel_requested", None)
        return bool(check and getattr(ctx, "current_seq", 0) and check())

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """Whether the current actor is a restarted one (a property, as in
        Ray; False outside actors)."""
        return getattr(self._ctx, "actor_restarts", 0) > 0

    def get(self) -> dict:
        info = {"job_id": self.get_job_id(), "node_id": self.get_node_id(), "namespace": self.namespace}
        for key, value in (("task_id", self.get_task_id()), ("actor_id", self.get_actor_id())):
            if value is not None:  # as Ray: only where there is one
                info[key] = value
        return info


def get_runtime_context() -> RuntimeContext:
    """The current process's RuntimeContext (on a Ray cluster, Ray's)."""
    ctx = _ctx()
    if getattr(ctx, "cluster", False):
        return ctx.runtime_context()
    return RuntimeContext(ctx)


def cluster_resources() -> dict:
    """Total logical resources of the runtime (from a task or actor too)."""
    return _ctx().cluster_resources()


def available_resources() -> dict:
    """Logical resources not held by running tasks now (from a task or
    actor too: the driver answers)."""
    return _ctx().available_resources()


def nodes() -> list[dict]:
    """The one node of this runtime, in Ray's format (on a Ray cluster,
    every node of the cluster)."""
    from shoal import config

    ctx = _ctx()
    if getattr(ctx, "cluster", False):
        return ctx.nodes()
    res = ctx.cluster_resources() if hasattr(ctx, "cluster_resources") else {}
    return [{
        "NodeID": getattr(ctx, "node_id", ""), "Alive": True, "NodeManagerAddress": config.NODE_IP_ADDRESS,
        "NodeManagerHostname": os.uname().nodename, "Resources": res,
    }]


def get_gpu_ids() -> list:
    """GPU device indices assigned to the current task or actor (in the
    driver: every device CUDA_VISIBLE_DEVICES lists)."""
    ctx = objectref.current()
    if getattr(ctx, "cluster", False):
        return ctx.gpu_ids()
    if ctx is not None and hasattr(ctx, "gpu_ids"):  # a worker
        return list(ctx.gpu_ids)
    return [int(d) if d.isdigit() else d for d in runtime.visible_gpus() or []]


def timeline(filename: str | None = None) -> list[dict] | None:
    """The tasks and actor calls that ended lately, as Chrome trace events
    (ray.timeline()): a row per worker and actor process, each task from
    its start to its end, with when it was submitted, how long it waited
    (ms) and its arguments' and results' sizes (bytes) in its args.

    Recorded always, into a bounded buffer (the last SHOAL_TASK_EVENTS
    tasks, 10,000 by default; 0 turns recording off). Load the file in
    chrome://tracing or https://ui.perfetto.dev.

    Args:
        filename: write the events there as JSON and return None; None:
            return them.
    """
    ctx = objectref.current()
    if getattr(ctx, "cluster", False):
        return ctx.timeline(filename)
    if ctx is None or not hasattr(ctx, "shell"):
        raise RuntimeError("timeline() is available in the driver of a running (non-local) runtime")
    from shoal.control.answers import Answers

    events = Answers(ctx).timeline()
    if filename is None:
        return events
    import json

    with open(filename, "w") as f:
        json.dump(events, f)
    return None
