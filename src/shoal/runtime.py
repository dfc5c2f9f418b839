"""The driver's runtime: the object store it owns, the scheduler shell, and
the driver's side of every API call.

    Runtime (this process's Context)
      +-- ObjectStore (owner)               puts, gets, waits: direct calls
      +-- Spiller, SpillFolders             a thread moving objects to files when the store fills
      +-- Shell                             scheduler + reference table + I/O thread
            +-- WorkerPool -> fork server -> worker processes
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time

from shoal import config as cfg
from shoal import exceptions as exc
from shoal import ids, objectref
from shoal.objectref import Context, ObjectRef
from shoal.scheduler import protocol as P
from shoal.scheduler.refs import DRIVER
from shoal.scheduler.shell import Shell
from shoal.spill.directory import SpillFolders
from shoal.spill.files import SpillFiles
from shoal.spill.spiller import Spiller
from shoal.store import ObjectStore

#: A worker spins this long for its next task, and any process this long for
#: a result in get(), before sleeping (when there is more than one core): a
#: sync round trip then costs no wake-up (about 60 us -> 30 us here).
WORKER_SPIN_S = 50e-6


def visible_gpus() -> list[str] | None:
    """The devices CUDA_VISIBLE_DEVICES lists (None: the variable is unset)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]


def detect_gpus() -> int:
    visible = visible_gpus()
    if visible is not None:
        return len(visible)
    try:
        return len([d for d in os.listdir("/proc/driver/nvidia/gpus")])
    except OSError:
        return 0


class Runtime(Context):
    """A running shoal instance, owned by the driver process."""

    holder = DRIVER

    def __init__(self, *, num_cpus: int | float | None = None, num_gpus: int | float | None = None,
                 resources: dict | None = None, object_store_memory: int | None = None,
                 log_to_driver: bool = True, namespace: str | None = None, env_vars: dict | None = None,
                 spilling: cfg.SpillConfig | None = None, dashboard: tuple[str, int] | None = None,
                 memory_monitor: cfg.MemoryMonitorConfig | None = None):
        self.started_at = time.time()
        config = cfg.Config.from_env()
        cpus = (os.cpu_count() or 1) if num_cpus is None else num_cpus
        gpus = detect_gpus() if num_gpus is None else num_gpus
        for name, value in (("num_cpus", cpus), ("num_gpus", gpus)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, not {value!r}")
        custom = dict(resources or {})
        for key in ("CPU", "GPU"):
            if key in custom:
                raise ValueError(f"use num_{key.lower()}s=..., not resources={{'{key}': ...}}")
        spilling = spilling or cfg.SpillConfig()
        capacity = object_store_memory or cfg.default_store_bytes()
        store = ObjectStore.open(capacity, max_objects=cfg.max_objects(capacity, spilling.enabled))
        super().__init__(store)
        if config.record_ref_creation_sites:
            self.refs = objectref.RecordingLocalRefs()
        self.session = os.urandom(4).hex()
        self.spilling = spilling
        self.spill_folders: SpillFolders | None = None
        self.spiller: Spiller | None = None
        spill_cfg = None
        if self.spilling.enabled:
            try:
                self.spill_folders = SpillFolders(list(self.spilling.directories), self.session)
            except BaseException:
                store.close()
                raise
            paths = self.spill_folders.paths
            store.configure_spilling(SpillFiles(paths, self.spilling.map_bytes))
            spill_cfg = {"folders": paths, "map_bytes": self.spilling.map_bytes}
        self.namespace = namespace or f"anonymous-{self.session}"
        self.config = config
        self.node_id = os.urandom(28).hex()
        total = {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus else {}), **custom}
        self.resources_total = {
            **total,
            "memory": float(int(cfg.total_memory_bytes() * 0.7)),
            "object_store_memory": float(store.statistics().capacity_bytes),
        }
        # The fork server imports numpy before forking any worker when the
        # driver uses it: workers share its pages and need no import later.
        preload = ("numpy",) if "numpy" in sys.modules else ()
        spin = WORKER_SPIN_S if (os.cpu_count() or 1) > 1 else 0.0
        store.raw.set_wait_spin(spin)  # a short task's result then costs no wake-up
        schedulable = {k: v for k, v in self.resources_total.items() if k != "object_store_memory"}
        self.shell = Shell(store, self.refs, schedulable, max(0, int(cpus)), self.session, spin=spin,
                           log_to_driver=log_to_driver, preload=preload, validate=config.validate,
                           namespace=self.namespace,
                           worker_cfg={"node_id": self.node_id, "env": dict(env_vars or {}), "spill": spill_cfg},
                           gpu_names=visible_gpus(), task_events=config.task_events,
                           remove_on_driver_death=self._left_after_death(config))
        try:
            self.shell.start()
            self.shell.start_memory_monitor(memory_monitor or cfg.memory_monitor_config())
            if self.spill_folders is not None:
                s = self.spilling
                refs = self.shell.refs.count  # read without the lock: a stale answer only skips or
                self.spiller = Spiller(store, store.spill_files, threshold=s.threshold,  # fails a mark
                                       min_round_bytes=s.min_round_bytes, io_threads=s.io_threads,
                                       fuse_below=s.fuse_below, spillable=refs.__contains__)
                self.spiller.start()
        except BaseException:
            self.shell.shutdown()
            self._remove_spill_folders()
            store.close()
            raise
        store.describe_holders = self.describe_holders
        self._lock = threading.Lock()
        self.control = self.dashboard = None
        try:  # (a failure from here on must not leave the processes started above)
            self.control = self._start_control() if config.control_endpoint else None
            self.shell.output.progress = _progress_line
            self.shell.output.writer = _write_above_bars
            if dashboard is not None:
                self.dashboard = self._start_dashboard(*dashboard)
        except BaseException:
            self.close()
            raise

    def _start_dashboard(self, host: str, port: int):
        """The live page (init(include_dashboard=True)), answered in this process."""
        from shoal.control.answers import Answers
        from shoal.dashboard.server import DashboardServer

        answers = self.control.answer if self.control is not None else Answers(self)
        server = DashboardServer(lambda question, **args: answers(question, args), host, port)
        sys.stderr.write(f"shoal: the dashboard is at {server.url}\n")
        return server

    def _left_after_death(self, config) -> list[str]:
        """What the fork server removes if this driver dies without shutting
        down: the spill folders, and the control endpoint's socket (made
        later, at a path known now)."""
        paths = list(self.spill_folders.paths) if self.spill_folders else []
        if config.control_endpoint:
            from shoal.control.endpoint import socket_path

            paths.append(socket_path(self.session))
        return paths

    def _start_control(self):
        """The control endpoint that `shoal status` and the dashboard ask
        (None if its folder cannot be used: the runtime runs without it)."""
        from shoal.control.answers import Answers
        from shoal.control.endpoint import ControlServer, warn_unavailable

        try:
            return ControlServer(Answers(self), self.session)
        except OSError as e:
            warn_unavailable(e)
            return None

    # -- submission ------------------------------------------------------------

    def submit(self, spec: P.TaskSpec, shape: tuple, deps: list, held: list) -> None:
        self.check_open()
        self.shell.submit(spec, shape, deps, held)

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        task_id = ids.task_of(ref._id)
        if task_id is not None:  # (a put object has no task to cancel)
            self.shell.cancel(task_id, force, recursive)

    def cancel_if_queued(self, ref: ObjectRef) -> bool:
        """Cancel the task of `ref` if it has not been handed to a worker;
        True if it was (see Shell.cancel_if_queued)."""
        task_id = ids.task_of(ref._id)
        return task_id is not None and self.shell.cancel_if_queued(task_id)

    # -- placement groups ----------------------------------------------------------

    def create_placement_group(self, gid: str, bundles: list[dict], strategy: str, name: str,
                               lifetime: str | None) -> None:
        self.check_open()
        self.shell.create_group(gid, bundles, strategy, name, lifetime)

    def remove_placement_group(self, gid: str) -> None:
        self.shell.remove_group(gid)

    def placement_group_table(self) -> dict[str, dict]:
        return self.shell.group_table()

    # -- actors ------------------------------------------------------------------

    def create_actor(self, actor, deps: list, held: list, wait: bool) -> None:
        self.check_open()
        self.shell.create_actor(actor, deps, held)

    def call_actor(self, actor_id: bytes, spec, deps: list, held: list) -> None:
        self.check_open()
        self.shell.call_actor(actor_id, spec, deps, held)

    def named_actor(self, name: str, namespace: str):
        actor = self.shell.named_actor(name, namespace)
        return None if actor is None else (actor.actor_id, actor.info)

    def kill_actor(self, actor_id: bytes, no_restart: bool) -> None:
        self.shell.kill_actor(actor_id, no_restart)

    def wait_actor_gone(self, actor_id: bytes, timeout: float | None) -> bool:
        return self.shell.wait_actor_gone(actor_id, timeout)

    def list_named_actors(self, all_namespaces: bool) -> list:
        with self.shell.lock:
            return self.shell.actors.list_named(None if all_namespaces else self.namespace)

    # -- hooks -----------------------------------------------------------------

    def handle_dropped(self) -> None:
        self.shell.wake()  # its I/O thread applies the driver's ref changes when woken

    def put(self, value):
        if self.refs.pending():
            self.shell.flush_refs()  # free what was dropped first: its memory is reused warm
        return super().put(value)

    def on_put(self, oid: bytes, nested: list) -> None:
        if nested:
            with self.shell.lock:
                self.shell.refs.add_contained(oid, [r._id for r in nested if hasattr(r, "_id")])
                self.shell.shared.update(r._id for r in nested if hasattr(r, "_id"))

    def before_wait(self, object_ids: list[bytes]) -> bool:
        if self.refs.pending():
            self.shell.flush_refs()
        return False

    def why_pending(self, object_id: bytes) -> str | None:
        return self.shell.why_pending(object_id)

    # -- information -------------------------------------------------------------

    def cluster_resources(self) -> dict:
        return dict(self.resources_total)

    def available_resources(self) -> dict:
        return self.shell.resources()[1]

    # -- shutdown ------------------------------------------------------------------

    def describe_holders(self) -> str:
        """A sentence naming the largest holders of store memory (for a
        full store's error)."""
        from shoal.util.memory import describe_holders

        return describe_holders(self)

    def _remove_spill_folders(self) -> None:
        if self.spill_folders is not None:
            self.spill_folders.remove()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self.dashboard is not None:
                self.dashboard.close()
            if self.control is not None:
                self.control.close()
            if self.spiller is not None:
                self.spiller.stop()
            self.shell.shutdown()
        finally:
            self._remove_spill_folders()
            self.store.close()
            with self._futures_lock:
                futures = [f for fs in self._futures.values() for f in fs]
                self._futures.clear()
                self._futures_new.clear()
            for f in futures:
                if not f.done():
                    f.set_exception(exc.RuntimeClosedError("the runtime was shut down"))


def _progress_line(line: bytes) -> None:
    """A task's progress bar changed (tqdm_ray): draw it."""
    from shoal.experimental import tqdm_ray

    tqdm_ray.manager().line(line)


def _write_above_bars(text: str, stream) -> bool:
    """Print a worker's line above the progress bars, if some are shown."""
    bars = sys.modules.get("shoal.experimental.tqdm_ray")
    manager = bars._manager if bars is not None else None
    if manager is None or not manager.active():
        return False
    manager.write(text, stream)
    return True


_runtime_lock = threading.Lock()


def start(**kwargs) -> Context:
    """Start a runtime in this process and make it current."""
    local_mode = kwargs.pop("local_mode", False)
    if "cluster" in kwargs:  # init(address=...): Ray's runtime
        from shoal.cluster import ClusterRuntime

        rt: Context = ClusterRuntime(**kwargs["cluster"])
    elif local_mode:
        from shoal.local_mode import LocalRuntime

        rt = LocalRuntime(**kwargs)
    else:
        rt = Runtime(**kwargs)
    objectref.set_current(rt)
    atexit.register(_shutdown_at_exit)
    return rt


def stop() -> None:
    """Shut down the current runtime (no-op if none)."""
    rt = objectref.current()
    if rt is None or not hasattr(rt, "close"):
        return  # nothing to stop, or a worker (whose runtime is the driver's)
    objectref.set_current(None)
    atexit.unregister(_shutdown_at_exit)
    rt.close()


def _shutdown_at_exit() -> None:
    try:
        stop()
    except Exception:
        pass
