"""``init(address=...)``: the same program on a Ray cluster, through Ray itself.

shoal runs on one machine. A program that outgrows it runs unchanged on a Ray
cluster: ``init(address="ray://host:port" | "host:port" | "auto")``, or
``init()`` with RAY_ADDRESS set (as ``ray job submit`` does), connects this
process to the cluster with ``ray.init`` and makes a ClusterRuntime current.
Every public call of shoal then goes to Ray: ``@remote`` functions and
actors become Ray's (with the same options), refs and actor handles are
Ray's own objects (so they pass as arguments, nest in values and pickle as
Ray's do; ``isinstance(ref, shoal.ObjectRef)`` holds for them), and Ray's
errors are raised as classes that are both Ray's and shoal's, so that
``except shoal.exceptions.GetTimeoutError`` or ``except RayTaskError``
catches them here as it does locally.

Inside the cluster's worker processes the first shoal call attaches to the
Ray worker the same way (Ray is connected there already).

This module is the whole mapping: the API calls one method of the runtime;
docs/cluster.md lists what differs from the local runtime.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from typing import Any

from shoal import exceptions as exc
from shoal import objectref
from shoal.objectref import Context

#: What to install for a cluster address to work.
EXTRA = 'pip install "shoal[ray]"'

#: A host:port address that does not accept a TCP connection within this
#: many seconds is unreachable (Ray itself would retry for about a minute).
CONNECT_PROBE_S = 5.0

#: init() keywords of shoal's own runtime, with what they are on a cluster.
_SHOAL_ONLY_INIT = {
    "object_spilling_directory": "spilling on a Ray cluster is configured when the cluster starts "
                                 "(ray start --system-config / --object-spilling-directory)",
}


def address_to_use(address: str | None) -> str | None:
    """The Ray address init(address) means, or None for shoal's own runtime.

    None (and no RAY_ADDRESS in the environment), "local" or "local://...":
    shoal's runtime on this machine. Anything else ("auto", "host:port",
    "ray://host:port"): that Ray cluster, as ray.init reads the address.
    """
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or None
    if address is None or address == "local" or str(address).startswith("local"):
        return None
    return str(address)


def inside_ray() -> bool:
    """True in a worker process of a Ray cluster (where Ray is connected
    already). A driver that called ray.init itself is not one: there, init()
    without an address still starts shoal's own runtime, as it always did."""
    ray = sys.modules.get("ray")
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    if worker is None or not ray.is_initialized():
        return False
    return getattr(worker.global_worker, "mode", None) == getattr(worker, "WORKER_MODE", object())


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(f"a Ray cluster address needs Ray: {EXTRA}") from None
    return ray


def _probe(address: str) -> None:
    """Raise ClusterUnreachableError now if host:port accepts no connection
    (Ray would retry for a minute before it says so)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # not host:port: let Ray read it
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_PROBE_S):
            pass
    except OSError as e:
        raise exc.ClusterUnreachableError(
            f"no Ray cluster answers at {address!r}: {e.strerror or e} (within {CONNECT_PROBE_S:g} s). "
            f"Check that the cluster runs (ray status) and that the address is its head node's "
            f"(ray start --head prints it); without an address, shoal runs on this machine."
        ) from None


class ClusterRuntime(Context):
    """The current runtime when shoal runs on a Ray cluster: each method is
    one call of Ray's API."""

    cluster = True

    def __init__(self, address: str | None, *, namespace: str | None = None, runtime_env: dict | None = None,
                 log_to_driver: bool = True, init_kwargs: dict | None = None):
        super().__init__(store=None)
        ray = self.ray = _import_ray()
        self.address = address
        self.owns = False  # this runtime called ray.init (and shuts Ray down at close)
        self.address_info: Any = {}
        if not ray.is_initialized():
            kwargs = dict(init_kwargs or {})
            for key, why in _SHOAL_ONLY_INIT.items():
                if key in kwargs:
                    raise ValueError(f"init({key}=...) is shoal's own: {why}")
            if address not in (None, "auto"):
                _probe(address)
            if kwargs.get("job_config") is not None:
                kwargs["job_config"] = _ray_job_config(ray, kwargs["job_config"])
            try:
                self.address_info = ray.init(address=address, namespace=namespace, runtime_env=runtime_env,
                                             log_to_driver=log_to_driver, **kwargs)
            except ConnectionError as e:
                raise exc.ClusterUnreachableError(
                    f"cannot connect to the Ray cluster at {address!r}: {e}") from None
            self.owns = True
        self.session = ray.get_runtime_context().get_job_id()
        self.namespace = ray.get_runtime_context().namespace
        self.node_id = ray.get_runtime_context().get_node_id()

    # -- objects ---------------------------------------------------------------

    def get(self, refs: list, timeout: float | None) -> list:
        """Values of Ray's refs, waiting up to `timeout` seconds in all
        (None: without limit); Ray's errors raised as shoal's too."""
        self.check_open()
        try:
            return self.ray.get(refs, timeout=timeout)
        except self.ray.exceptions.RayError as e:
            raise as_shoal_error(e) from None

    def put(self, value: Any) -> Any:
        """Ray's ref to `value`, stored in the cluster's object store."""
        self.check_open()
        return self.ray.put(value)

    def wait(self, refs: list, num_returns: int, timeout: float | None) -> tuple[list, list]:
        """(ready, not ready) once `num_returns` refs are ready or `timeout`
        seconds pass (None: without limit), as ray.wait answers."""
        self.check_open()
        return self.ray.wait(refs, num_returns=num_returns, timeout=timeout)

    def cancel(self, ref: Any, force: bool, recursive: bool) -> None:
        """ray.cancel of the task making `ref` (or of a Ray generator)."""
        self.ray.cancel(ref, force=force, recursive=recursive)

    def future_for(self, ref: Any, fut: Any = None):
        """A concurrent.futures.Future (`fut`, or a new one) completed with
        the value of Ray's `ref`, or its error as shoal's."""
        import concurrent.futures as cf

        fut = cf.Future() if fut is None else fut
        fut._shoal_ref = ref

        def done(source: cf.Future) -> None:
            if fut.done():
                return
            try:
                error = source.exception()
                if error is None:
                    fut.set_result(source.result())
                else:
                    fut.set_exception(as_shoal_error(error))
            except (cf.InvalidStateError, cf.CancelledError):
                pass  # cancelled meanwhile: nobody waits for it

        ref.future().add_done_callback(done)
        return fut

    # -- tasks and actors ------------------------------------------------------

    def submit_function(self, rf, options: dict, args: tuple, kwargs: dict) -> Any:
        """Run the shoal RemoteFunction `rf` as a Ray task with `options`
        (shoal's, already checked); returns Ray's ref(s) or generator."""
        cache = rf.__dict__.setdefault("_ray_functions", {})
        base = cache.get(self.session)
        if base is None:
            base = cache[self.session] = self.ray.remote(_plain_function(rf._function))
        opts = ray_options(options)
        return (base.options(**opts) if opts else base).remote(*args, **kwargs)

    def create_actor(self, ac, options: dict, args: tuple, kwargs: dict) -> Any:
        """Start the shoal ActorClass `ac` as a Ray actor; returns Ray's handle."""
        cache = ac.__dict__.setdefault("_ray_classes", {})
        base = cache.get(self.session)
        if base is None:
            for klass in ac._cls.__mro__:  # @shoal.method(...) options, in Ray's form
                for fn in vars(klass).values():
                    opts = getattr(fn, "__shoal_method_options__", None)
                    if opts and callable(fn):
                        self.ray.method(**opts)(fn)
            base = cache[self.session] = self.ray.remote(ac._cls)
        opts = ray_options(options)
        return (base.options(**opts) if opts else base).remote(*args, **kwargs)

    def get_actor(self, name: str, namespace: str | None) -> Any:
        return self.ray.get_actor(name, namespace=namespace)

    def kill(self, actor: Any, no_restart: bool) -> None:
        self.ray.kill(actor, no_restart=no_restart)

    def list_named_actors(self, all_namespaces: bool) -> list:
        from ray.util import list_named_actors

        if all_namespaces:
            return list_named_actors(all_namespaces=True)
        return [{"name": n, "namespace": self.namespace} for n in list_named_actors()]

    # -- information -----------------------------------------------------------

    def info(self) -> dict:
        """What init() returns, in Ray's form (Ray's own address_info)."""
        info = dict(getattr(self.address_info, "address_info", None) or {})
        info.setdefault("node_id", self.node_id)
        info.setdefault("namespace", self.namespace)
        info.setdefault("python_version", ".".join(map(str, sys.version_info[:3])))
        info.setdefault("webui_url", getattr(self.address_info, "dashboard_url", None) or None)
        return info

    def runtime_context(self) -> Any:
        return self.ray.get_runtime_context()

    def cluster_resources(self) -> dict:
        return self.ray.cluster_resources()

    def available_resources(self) -> dict:
        return self.ray.available_resources()

    def nodes(self) -> list[dict]:
        return self.ray.nodes()

    def gpu_ids(self) -> list:
        return self.ray.get_gpu_ids()

    def timeline(self, filename: str | None) -> Any:
        return self.ray.timeline(filename=filename)

    def util(self, module: str, name: str) -> Any:
        """Ray's counterpart of shoal.util's `name` (module: "state",
        "placement_group"...), for the util functions that ask the cluster."""
        import importlib

        fn = getattr(importlib.import_module(f"ray.util.{module}" if module else "ray.util"), name)
        if module != "state":
            return fn
        gcs = self.ray.get_runtime_context().gcs_address

        def ask_this_cluster(*args: Any, **kwargs: Any) -> Any:
            # Ray's state API finds its cluster by looking around this machine
            # (and gives up when it finds several): name the one in use.
            kwargs.setdefault("address", gcs)
            return fn(*args, **kwargs)

        return ask_this_cluster

    # -- shutdown --------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.owns:
            self.ray.shutdown()


def on_ray(module: str):
    """Decorator of a shoal.util function that asks the runtime: on a Ray
    cluster, Ray's namesake in ray.util.<module> answers instead, with the
    same arguments."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = objectref.current()
            if ctx is None and inside_ray():  # a worker of the cluster: attach first
                from shoal import api

                api.init()
                ctx = objectref.current()
            if getattr(ctx, "cluster", False):
                return ctx.util(module, fn.__name__)(*args, **kwargs)
            return fn(*args, **kwargs)

        return wrapper

    return deco


def _plain_function(fn: Any) -> Any:
    """`fn` as a Python function, which Ray's @remote requires (shoal's
    takes any callable: a builtin, a partial, a callable object)."""
    import inspect

    if inspect.isfunction(fn):
        return fn

    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    call.__name__ = call.__qualname__ = getattr(fn, "__name__", type(fn).__name__)
    return call


def ray_options(options: dict) -> dict:
    """shoal's task or actor options as Ray's: the names are Ray's already;
    the scheduling strategy objects of shoal.util.scheduling_strategies
    become Ray's classes of the same name."""
    from shoal import placement

    out = dict(options)
    strategy = out.get("scheduling_strategy")
    if isinstance(strategy, (placement.PlacementGroupSchedulingStrategy, placement.NodeAffinitySchedulingStrategy,
                             placement.NodeLabelSchedulingStrategy)):
        from ray.util import scheduling_strategies as rs

        if type(getattr(strategy, "placement_group", None)) is placement.PlacementGroup:
            raise ValueError("a placement group of shoal's own runtime cannot place work on a Ray cluster: "
                             "create it with shoal.util.placement_group() after init(address=...)")
        out["scheduling_strategy"] = getattr(rs, type(strategy).__name__)(**vars(strategy))
    if type(out.get("placement_group")) is placement.PlacementGroup:
        raise ValueError("a placement group of shoal's own runtime cannot place work on a Ray cluster: "
                         "create it with shoal.util.placement_group() after init(address=...)")
    return out


# -- errors ----------------------------------------------------------------------

_both: dict[type, type] = {}


def _shoal_class(ray_cls: type) -> type | None:
    for c in ray_cls.__mro__:
        if c.__module__ == "ray.exceptions":
            mine = getattr(exc, c.__name__, None)
            if isinstance(mine, type) and issubclass(mine, BaseException):
                return mine
    return None


def _rebuild(ray_error: BaseException) -> BaseException:
    return as_shoal_error(ray_error)


def _reduce(self):
    return _rebuild, (self.__dict__["_ray_error"],)


def as_shoal_error(e: BaseException) -> BaseException:
    """Ray's error `e` as an instance of both its own class and shoal's class
    of the same name (a task's error stays an instance of the task's own
    exception type too); `e` itself if shoal has no such class."""
    cls = type(e)
    both = _both.get(cls)
    if both is None:
        mine = _shoal_class(cls)
        if mine is None or issubclass(cls, mine):
            return e
        try:
            both = type(cls.__name__, (cls, mine), {"__module__": cls.__module__, "__reduce__": _reduce,
                                                    "__qualname__": cls.__qualname__})
        except TypeError:
            return e
        _both[cls] = both
    try:
        new = both.__new__(both)
    except TypeError:
        return e
    new.__dict__.update(e.__dict__)
    new.__dict__["_ray_error"] = e
    new.args = e.args
    new.__traceback__ = e.__traceback__
    new.__cause__ = e.__cause__
    return new


def _ray_job_config(ray, job_config: Any) -> Any:
    """Ray's JobConfig for shoal's (shoal.job_config.JobConfig has Ray's
    fields); one of Ray's own passes through."""
    from shoal.job_config import JobConfig

    if not isinstance(job_config, JobConfig):
        return job_config
    from ray.job_config import JobConfig as RayJobConfig

    return RayJobConfig(jvm_options=job_config.jvm_options, code_search_path=job_config.code_search_path,
                        runtime_env=job_config.runtime_env, metadata=job_config.metadata,
                        ray_namespace=job_config.ray_namespace,
                        default_actor_lifetime=job_config.default_actor_lifetime)
