"""The joblib backend: joblib's own extension point (ParallelBackendBase),
each dispatched batch a shoal task.

    Parallel --submit(batch)--> pickle the batch; arrays >= max_nbytes become
                                persistent ids of refs put once per Parallel call
             <--future---------  run_batch.remote(blob, *refs): refs at the top
                                level, resolved zero-copy in the worker
"""

from __future__ import annotations

import contextlib
import io
import pickle
from typing import Any

import cloudpickle
from joblib._parallel_backends import (
    AutoBatchingMixin, FallbackToBackend, ParallelBackendBase, SequentialBackend,
)

from shoal import api, objectref
from shoal.remote_function import RemoteFunction, current_context

#: joblib's default for memmapping large arrays (max_nbytes="1M").
DEFAULT_MAX_NBYTES = 1_000_000


def _run_batch(blob: bytes, *arrays: Any) -> Any:
    """In a worker: unpickle the batch, its large arrays taken from
    `arrays` (zero-copy views of the store), and run it. The backend is
    registered here too, so that a nested Parallel(backend="shoal") in the
    batch runs its calls as tasks as well."""
    from joblib.parallel import BACKENDS

    if "shoal" not in BACKENDS:
        from shoal.util.joblib import register_ray, register_shoal

        register_shoal()
        register_ray()
    unpickler = pickle.Unpickler(io.BytesIO(blob))
    unpickler.persistent_load = arrays.__getitem__
    return unpickler.load()()


class _BatchPickler(cloudpickle.Pickler):
    """Pickles a batch, replacing numpy arrays of at least max_nbytes by
    the index of their ref in `refs` (each array put once, via `stored`)."""

    def __init__(self, file, stored: dict, refs: list, max_nbytes: int):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.stored = stored
        self.refs = refs
        self.max_nbytes = max_nbytes
        self.index: dict[bytes, int] = {}
        import numpy

        self.ndarray = numpy.ndarray

    def persistent_id(self, obj: Any) -> int | None:
        if type(obj) is not self.ndarray and not isinstance(obj, self.ndarray):
            return None
        if obj.nbytes < self.max_nbytes or obj.dtype.hasobject:
            return None
        entry = self.stored.get(id(obj))
        if entry is None:
            # The array is kept with its ref: its id cannot be reused by
            # another array while the Parallel call lasts.
            entry = self.stored[id(obj)] = (obj, api.put(obj))
        ref = entry[1]
        i = self.index.get(ref.binary())
        if i is None:
            i = self.index[ref.binary()] = len(self.refs)
            self.refs.append(ref)
        return i


class ShoalBackend(AutoBatchingMixin, ParallelBackendBase):
    """Runs joblib's batches as shoal tasks (see the module docstring).

    Args (as keywords of parallel_backend / parallel_config):
        remote_args: task options for every batch (num_cpus, resources, ...).
    """

    supports_retrieve_callback = True
    supports_inner_max_num_threads = False
    uses_threads = False
    supports_sharedmem = False

    def __init__(self, nesting_level: int | None = None, inner_max_num_threads: int | None = None,
                 remote_args: dict | None = None, **backend_kwargs: Any):
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads,
                         **backend_kwargs)
        self.remote_args = dict(remote_args or {})
        self._remote: RemoteFunction | None = None
        self._stored: dict[int, tuple] = {}
        self._max_nbytes: int | None = DEFAULT_MAX_NBYTES
        self._futures: set = set()
        self.parallel = None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """n_jobs, with negative numbers counted back from the runtime's
        CPUs (-1: all of them), as joblib counts them from the machine's."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(int(_cpus()) + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: int = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, max_nbytes: int | None = DEFAULT_MAX_NBYTES,
                  remote_args: dict | None = None, **ignored: Any) -> int:
        """Ready the backend for a Parallel call; returns its n_jobs. One
        job falls back to running in this process, as loky does."""
        n = self.effective_n_jobs(n_jobs)
        if n == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        self._max_nbytes = max_nbytes
        options = {"max_retries": 0, **self.remote_args, **(remote_args or {})}
        cpus = _cpus()
        if "num_cpus" not in options and cpus:
            options["num_cpus"] = cpus / n  # n batches at once, as n loky workers, even beyond the CPUs
        self._remote = RemoteFunction(_run_batch, options)
        return n

    def start_call(self) -> None:
        self._stored = {}

    def stop_call(self) -> None:
        self._stored = {}  # the arrays' objects go once the tasks using them end

    def submit(self, func: Any, callback: Any = None) -> Any:
        """Run one batch (joblib's BatchedCalls) as a task; returns a
        concurrent.futures.Future of its results."""
        buf = io.BytesIO()
        refs: list = []
        if self._max_nbytes is None:
            cloudpickle.dump(func, buf, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            _BatchPickler(buf, self._stored, refs, self._max_nbytes).dump(func)
        ref = self._remote.remote(buf.getvalue(), *refs)
        future = ref.future()
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: Any) -> Any:
        return future.result()

    @contextlib.contextmanager
    def retrieval_context(self):
        """A Parallel call inside a task waits for its batches: the task
        gives back its CPU meanwhile (as in get()), or nested batches that
        need that CPU would never run."""
        with objectref.waiting():
            yield

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A call failed: cancel the batches still queued or running."""
        for future in list(self._futures):
            ref = getattr(future, "_shoal_ref", None)
            if ref is not None:
                try:
                    api.cancel(ref)
                except Exception:
                    pass
        self._futures.clear()
        self._stored = {}
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel, max_nbytes=self._max_nbytes)

    def terminate(self) -> None:
        self._stored = {}
        self.reset_batch_stats()

    def __reduce__(self):
        # Its futures and the Parallel call stay here; a copy gets the settings.
        return (ShoalBackend, (self.nesting_level, self.inner_max_num_threads, self.remote_args))


def _cpus() -> float:
    """The runtime's CPUs, starting a runtime if none runs (as Ray's backend does)."""
    ctx = current_context()
    if hasattr(ctx, "cluster_resources"):
        return float(ctx.cluster_resources().get("CPU", 0))
    import os

    return float(os.cpu_count() or 1)
