"""``init(local_mode=True)``: every task runs in the driver process, in
order, when it is submitted, so pdb breakpoints and prints work as in plain
Python. Values stay in this process (no store, no workers); ObjectRefs,
errors and the API behave as in the normal runtime. Ray removed this mode;
users kept asking for it.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

from shoal import exceptions as exc
from shoal import ids
from shoal.objectref import Context, ObjectRef


class LocalRuntime(Context):
    local = True

    def __init__(self, *, num_cpus=None, num_gpus=None, resources=None, object_store_memory=None,
                 log_to_driver=True, namespace=None, env_vars=None, spilling=None):
        super().__init__(store=None)  # (values live in this process: nothing to spill)
        self.session = os.urandom(4).hex()
        self.namespace = namespace or f"anonymous-{self.session}"
        self.node_id = os.urandom(28).hex()
        self.values: dict[bytes, tuple[bool, Any]] = {}  # id -> (is_error, value)
        cpus = (os.cpu_count() or 1) if num_cpus is None else num_cpus
        self.resources_total = {"CPU": float(cpus), **({"GPU": float(num_gpus)} if num_gpus else {}),
                                **(resources or {})}

    # Values ---------------------------------------------------------------------

    def _collect(self) -> None:
        _, lasts = self.refs.drain()
        for oid in lasts:
            self.values.pop(oid, None)

    def _store(self, oid: bytes, value: Any, error: bool = False) -> ObjectRef:
        ref = ObjectRef(oid, self)
        self.values[oid] = (error, value)
        return ref

    def put(self, value: Any) -> ObjectRef:
        self.check_open()
        if isinstance(value, ObjectRef):
            raise TypeError("put() of an ObjectRef is not allowed")
        self._collect()
        return self._store(ids.new_put_id(), value)

    def get(self, refs: list, timeout: float | None) -> list:
        self.check_open()
        out = []
        for ref in refs:
            entry = self.values.get(ref._id)
            if entry is None:
                raise exc.ObjectLostError(f"{ref!r} has no value in this local-mode runtime")
            error, value = entry
            if error:
                raise value.as_instanceof_cause() if isinstance(value, exc.RayTaskError) else value
            out.append(value)
        return out

    def wait(self, refs: list, num_returns: int, timeout: float | None) -> tuple[list, list]:
        return refs[:num_returns], refs[num_returns:]

    def future_for(self, ref: ObjectRef):
        import concurrent.futures

        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._complete(fut, ref)
        return fut

    # Tasks -----------------------------------------------------------------------

    def run_task(self, function: Any, name: str, args: tuple, kwargs: dict, num_returns: int) -> Any:
        """Run the task now and return what .remote() returns."""
        self.check_open()
        self._collect()
        task_id = ids.new_task_id()
        try:
            args = tuple(self.get([a], None)[0] if type(a) is ObjectRef else a for a in args)
            kwargs = {k: self.get([v], None)[0] if type(v) is ObjectRef else v for k, v in kwargs.items()}
            result = function(*args, **kwargs)
            if num_returns == -1:  # a generator: run it to the end now
                return iter([self._store(ids.return_id(task_id, k + 1), v) for k, v in enumerate(result)])
            if num_returns == -2:  # "dynamic": a ref to the refs of the items
                from shoal.objectref import DynamicObjectRefGenerator

                items = [self._store(ids.return_id(task_id, k + 1), v) for k, v in enumerate(result)]
                return self._store(ids.return_id(task_id, 0), DynamicObjectRefGenerator(items))
            values = (result,) if num_returns == 1 else tuple(result) if num_returns else ()
            if num_returns > 1 and len(values) != num_returns:
                raise ValueError(f"Task returned {len(values)} objects, but num_returns={num_returns}. "
                                 f"Task {name} must return a tuple or list of {num_returns} values.")
        except Exception as e:
            err = e if isinstance(e, exc.RayTaskError) else exc.RayTaskError(
                name, "".join(traceback.format_exception(type(e), e, e.__traceback__)), e, os.getpid())
            n = 1 if num_returns in (1, -1, -2) else num_returns
            refs = [self._store(ids.return_id(task_id, i), err, error=True) for i in range(n)]
            return refs[0] if num_returns in (1, -1, -2) else refs
        refs = [self._store(ids.return_id(task_id, i), v) for i, v in enumerate(values)]
        if num_returns == 1:
            return refs[0]
        return refs or None

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        pass  # every task has already run

    def cluster_resources(self) -> dict:
        return dict(self.resources_total)

    def available_resources(self) -> dict:
        return dict(self.resources_total)

    def close(self) -> None:
        self.closed = True
        self.values.clear()
