"""The Dask scheduler: a Dask graph submitted as shoal tasks, all at once.

    dask.compute --graph, keys--> shoal_dask_get
        order the graph (dependencies first), then for each node:
          Task      -> run_task.remote(task, dep_keys, *deps)   deps: refs (values
                       in the worker, zero-copy) or small literal values
          DataNode  -> its value (put in the store once when large; a persisted
                       chunk is a ref already)
          Alias     -> its target's ref
        drop each ref once every task using it is submitted (the tasks keep
        their arguments alive): memory is freed as the graph runs
        get(refs of keys) -> values, in keys' nesting   (persist: the refs)
"""

from __future__ import annotations

from typing import Any, Hashable

import dask
from dask._task_spec import Alias, DataNode, Task, convert_legacy_graph
from dask.sizeof import sizeof
from dask.utils import funcname

from shoal import api
from shoal.objectref import ObjectRef
from shoal.remote_function import RemoteFunction

#: A literal of at least this many bytes (dask.sizeof) that tasks depend on
#: is put in the store once, instead of travelling with each task using it.
PUT_LITERALS_FROM_BYTES = 100 * 1024

#: Annotations that are task options as they are.
_OPTION_ANNOTATIONS = ("num_cpus", "num_gpus", "memory")


class Persisted:
    """A persisted result in a Dask graph: its ref in the store.

    A computation on shoal passes it to the tasks that use it as a ref
    (they get the value, zero-copy). Dask may also fuse it into a task that
    uses it (its DataNode becomes part of that task): unpickled in the
    worker, it then turns into its value there."""

    __slots__ = ("ref",)

    def __init__(self, ref: ObjectRef):
        self.ref = ref

    def __reduce__(self):
        return (_value_of, (self.ref,))

    def __dask_tokenize__(self) -> str:
        return self.ref.hex()

    def __repr__(self) -> str:
        return f"Persisted({self.ref.hex()})"


def _value_of(ref: ObjectRef) -> Any:
    return api.get(ref)  # sealed already: persist() waits for its results


def run_task(task: Task, dep_keys: tuple, *deps: Any) -> Any:
    """In a worker: one Dask task, its dependencies' values in order."""
    return task(dict(zip(dep_keys, deps)))


class _Runner:
    """run_task under the name of the Dask function it runs (task names in
    the timeline and state API; the scheduler learns each one's duration
    apart, so short and long functions are not mistaken for one another)."""

    def __init__(self, name: str):
        self.__name__ = self.__qualname__ = name
        self.__module__ = __name__

    def __call__(self, task: Task, dep_keys: tuple, *deps: Any) -> Any:
        return run_task(task, dep_keys, *deps)


class _Submitter:
    """Remote functions per Dask function, and their options per
    annotation, made once per computation."""

    def __init__(self) -> None:
        self.functions: dict[str, RemoteFunction] = {}
        self.bound: dict[tuple, Any] = {}

    def remote_for(self, task: Task, options: dict | None) -> Any:
        name = _task_name(task)
        rf = self.functions.get(name)
        if rf is None:
            rf = self.functions[name] = RemoteFunction(_Runner(name), {"name": name})
        if not options:
            return rf
        key = (name, tuple(sorted((k, repr(v)) for k, v in options.items())))
        bound = self.bound.get(key)
        if bound is None:
            bound = self.bound[key] = rf.options(**options)
        return bound


def _task_name(task: Task) -> str:
    try:
        return funcname(task.func)
    except Exception:
        return "dask_task"


def shoal_dask_get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """A Dask scheduler ("get" function): run the graph's tasks as shoal
    tasks and return the values of `keys` (nested as `keys` is).

    Args:
        dsk: a Dask graph (a mapping of keys to tasks) or anything with
            __dask_graph__(), such as the expression dask.compute passes.
        keys: a key or (nested) lists of keys.
        shoal_persist (keyword): return refs instead of values (what
            persist() keeps); ray_persist is Ray's name for it.
        Other keywords Dask passes to schedulers are accepted and ignored.
    Raises:
        The error of a failed task, with its own type (and RayTaskError's),
        at once when it happens.
    """
    persist = bool(kwargs.pop("shoal_persist", False) or kwargs.pop("ray_persist", False))
    annotations = _annotations(dsk)
    graph = _graph(dsk)
    flat = list(_flatten(keys))
    refs = _submit_graph(graph, flat, annotations)
    if persist:
        values = [refs[k] if isinstance(refs[k], ObjectRef) else api.put(refs[k]) for k in flat]
        api.get(values)  # as Dask's local persist: done (or raising) when it returns
        values = [Persisted(r) for r in values]
    else:
        wanted = [refs[k] for k in flat]
        got = api.get([r for r in wanted if isinstance(r, ObjectRef)])
        it = iter(got)
        values = [next(it) if isinstance(r, ObjectRef) else r for r in wanted]
    return _pack(keys, dict(zip(flat, values)))


def _persist(collections: list, optimize_graph: bool = True, **kwargs: Any) -> list:
    """Dask's persist protocol for schedulers (dask.persist calls
    scheduler.persist): compute, keeping every result as a ref in the store."""
    def get_refs(dsk: Any, keys: Any, **kw: Any) -> Any:
        return shoal_dask_get(dsk, keys, shoal_persist=True, **kw)

    return list(dask.persist(*collections, scheduler=get_refs, optimize_graph=optimize_graph, traverse=False,
                             **kwargs))


shoal_dask_get.persist = _persist


def shoal_dask_persist(*args: Any, **kwargs: Any) -> Any:
    """dask.persist on shoal: results stay in the store as refs."""
    return dask.persist(*args, scheduler=shoal_dask_get, **kwargs)


def enable_dask_on_shoal(shuffle: str | None = "tasks") -> Any:
    """Make shoal Dask's scheduler for every computation (dask.config);
    returns the config setting, which also works as a context manager.
    shuffle: the dataframe shuffle method ("tasks": no distributed needed)."""
    settings: dict[str, Any] = {"scheduler": shoal_dask_get}
    if shuffle is not None:
        settings["dataframe.shuffle.method"] = shuffle
    return dask.config.set(settings)


def disable_dask_on_shoal() -> Any:
    """Give Dask back its default schedulers."""
    return dask.config.set({"scheduler": None, "dataframe.shuffle.method": None})


# -- the graph -------------------------------------------------------------------------


def _graph(dsk: Any) -> dict:
    if not isinstance(dsk, dict) and hasattr(dsk, "__dask_graph__"):
        dsk = dsk.__dask_graph__()
    return convert_legacy_graph(dict(dsk))


def _annotations(dsk: Any) -> dict:
    """{key: task options} from the graph's Dask annotations."""
    get = getattr(dsk, "__dask_annotations__", None)
    try:
        by_kind = get() if get is not None else {}
    except Exception:
        by_kind = {}
    options: dict[Hashable, dict] = {}
    for kind, per_key in (by_kind or {}).items():
        for key, value in per_key.items():
            opts = _option(kind, value)
            if opts:
                options.setdefault(key, {}).update(opts)
    return options


def _option(kind: str, value: Any) -> dict:
    """Task options for one annotation (an empty dict: none applies)."""
    if kind in ("shoal_remote_args", "ray_remote_args"):
        return dict(value or {})
    if kind in _OPTION_ANNOTATIONS:
        return {kind: value}
    if kind == "retries":  # Dask retries any failure
        return {"max_retries": int(value), "retry_exceptions": True}
    if kind == "resources":
        res = dict(value or {})
        out: dict[str, Any] = {}
        if "CPU" in res:
            out["num_cpus"] = res.pop("CPU")
        if "GPU" in res:
            out["num_gpus"] = res.pop("GPU")
        if res:
            out["resources"] = res
        return out
    return {}


def _order(graph: dict, keys: list) -> list:
    """The keys `keys` need, dependencies first (iterative: graphs may be
    deeper than Python's recursion limit)."""
    order: list = []
    seen: set = set()
    for root in keys:
        if root in seen or root not in graph:
            continue
        stack = [(root, iter(graph[root].dependencies))]
        seen.add(root)
        while stack:
            key, deps = stack[-1]
            for dep in deps:
                if dep not in seen and dep in graph:
                    seen.add(dep)
                    stack.append((dep, iter(graph[dep].dependencies)))
                    break
            else:
                stack.pop()
                order.append(key)
    return order


def _submit_graph(graph: dict, keys: list, annotations: dict) -> dict:
    """Submit every task `keys` need; returns {key: ref or literal value}
    for `keys` (each intermediate dropped once its users are submitted)."""
    order = _order(graph, keys)
    users: dict = {}
    for key in order:
        for dep in graph[key].dependencies:
            users[dep] = users.get(dep, 0) + 1
    outputs = set(keys)
    values: dict = {}
    submitter = _Submitter()
    for key in order:
        node = graph[key]
        if isinstance(node, DataNode):
            value = node.value
            if isinstance(value, Persisted):
                value = value.ref
            elif not isinstance(value, ObjectRef) and users.get(key) and sizeof(value) >= PUT_LITERALS_FROM_BYTES:
                value = api.put(value)
            values[key] = value
            continue
        if isinstance(node, Alias):
            values[key] = values[node.target]
        else:
            dep_keys = tuple(node.dependencies)
            deps = [values[d] for d in dep_keys]
            values[key] = submitter.remote_for(node, annotations.get(key)).remote(node, dep_keys, *deps)
        for dep in node.dependencies:
            users[dep] -= 1
            if users[dep] == 0 and dep not in outputs:
                del values[dep]  # its users hold it now
    return {k: values[k] for k in keys}


def _flatten(keys: Any):
    if isinstance(keys, list):
        for k in keys:
            yield from _flatten(k)
    else:
        yield keys


def _pack(keys: Any, values: dict) -> Any:
    if isinstance(keys, list):
        return [_pack(k, values) for k in keys]
    return values[keys]
