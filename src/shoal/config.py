"""Tunables and machine facts; every SHOAL_* environment variable is read
here and nowhere else (stdlib only)."""

from __future__ import annotations

import dataclasses
import os

#: Share of the machine's memory the object store takes by default (Ray: 30%).
DEFAULT_STORE_FRACTION = 0.3
#: The store is never made smaller than this (Ray: 75 MiB).
MIN_STORE_BYTES = 75 << 20
#: The address shoal reports for its one node (nodes(), init()'s context,
#: util.get_node_ip_address): everything runs on this machine.
NODE_IP_ADDRESS = "127.0.0.1"
#: Objects of at least this size are copied by several threads.
PARALLEL_COPY_BYTES = 8 << 20


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, not {value!r}") from None


def total_memory_bytes() -> int:
    """Physical memory, or the cgroup (container) limit when that is lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            total = min(total, int(limit))
    except (OSError, ValueError):
        pass
    return total


def shm_free_bytes(path: str = "/dev/shm") -> int | None:
    """Free bytes in /dev/shm, or None if there is no such mount."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def default_store_bytes() -> int:
    """30% of memory, never more than /dev/shm has free, at least 75 MiB
    (SHOAL_OBJECT_STORE_MEMORY overrides)."""
    override = _env_int("SHOAL_OBJECT_STORE_MEMORY", None)
    if override is not None:
        return override
    size = int(total_memory_bytes() * DEFAULT_STORE_FRACTION)
    free = shm_free_bytes()
    if free is not None:
        size = min(size, int(free * 0.95))
    return max(size, MIN_STORE_BYTES)


#: Objects a runtime that spills can hold, at least: spilled objects keep
#: their entry in the store's table (1M entries cost ~2 ms at init).
MIN_OBJECTS_WHEN_SPILLING = 1 << 20


def max_objects(capacity: int, spilling: bool) -> int | None:
    """Entries of a runtime's object table: SHOAL_MAX_OBJECTS, else the
    store's default (None: capacity / 2 KiB, between 64Ki and 4Mi), raised
    to MIN_OBJECTS_WHEN_SPILLING when objects may spill (data several times
    the store means several times its objects)."""
    override = _env_int("SHOAL_MAX_OBJECTS", None)
    if override is not None:
        return override
    if not spilling:
        return None
    return max(MIN_OBJECTS_WHEN_SPILLING, min(capacity // 2048, 1 << 22))


#: The pool's ceiling on small machines (blocked tasks make it grow past
#: the CPU count, up to this).
MIN_POOL_CEILING = 192

#: Client slots of the store kept for processes other than pool workers:
#: the driver, the fork server, actors beyond the pool's, tools attached.
RESERVED_CLIENT_SLOTS = 32


def max_pool_workers(cpus: int | None, client_slots: int) -> int:
    """The most worker processes the pool may run: SHOAL_MAX_WORKERS, else
    four per core (at least MIN_POOL_CEILING), within the store's
    `client_slots` less RESERVED_CLIENT_SLOTS. `cpus`: the machine's cores
    (None: os.cpu_count())."""
    room = max(1, client_slots - RESERVED_CLIENT_SLOTS)
    override = _env_int("SHOAL_MAX_WORKERS", None)
    if override is not None:
        if override < 1 or override > room:
            raise ValueError(f"SHOAL_MAX_WORKERS={override}: must be between 1 and {room} (the store admits "
                             f"{client_slots} processes and keeps {RESERVED_CLIENT_SLOTS} for others; build "
                             f"with SHOAL_MAX_CLIENTS=N for more)")
        return override
    cores = cpus or os.cpu_count() or 1
    return min(room, max(MIN_POOL_CEILING, 4 * cores))


def copy_threads(nbytes: int) -> int:
    """Threads for copying `nbytes` into the store: one below
    PARALLEL_COPY_BYTES, else up to one per core (at most 4)."""
    if nbytes < PARALLEL_COPY_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


#: Ray's defaults: spill when 80% of the store is in use; a round spills at
#: least 100 MB (fewer, larger files).
DEFAULT_SPILL_THRESHOLD = 0.8
DEFAULT_MIN_SPILLING_SIZE = 100 * 1000 * 1000


def auto_init_enabled() -> bool:
    """Whether the first remote call, get or put starts a runtime when none
    runs (Ray's default). SHOAL_ENABLE_AUTO_CONNECT or Ray's name,
    RAY_ENABLE_AUTO_CONNECT, set to "0" turns it off; read at each call."""
    value = os.environ.get("SHOAL_ENABLE_AUTO_CONNECT", os.environ.get("RAY_ENABLE_AUTO_CONNECT", "1"))
    return value.strip() != "0"


@dataclasses.dataclass(frozen=True)
class SpillConfig:
    """How a runtime spills objects to disk (sizes in bytes)."""

    #: spilling directories (each gets a folder of the runtime); empty: spilling is off
    directories: tuple = ()
    #: share of the store in use beyond which objects are spilled ahead of need
    threshold: float = DEFAULT_SPILL_THRESHOLD
    #: a round asked for room spills at least this much (capped at 1/8 of the store)
    min_round_bytes: int = DEFAULT_MIN_SPILLING_SIZE
    #: threads writing spill files at once
    io_threads: int = 2
    #: objects smaller than this are fused into shared files
    fuse_below: int = 8 << 20
    #: spilled objects of at least this size are read by mapping their file
    map_bytes: int = 256 << 10

    @property
    def enabled(self) -> bool:
        return bool(self.directories)


_UNSET = object()


def spill_config(directory=_UNSET, system_config: dict | None = None) -> SpillConfig:
    """The spilling settings, as in Ray: init(object_spilling_directory=...)
    first (None: spilling off), then _system_config's "object_spilling_config"
    (JSON: {"type": "filesystem", "params": {"directory_path": path or
    [paths]}}), "object_spilling_threshold", "min_spilling_size",
    "max_io_workers" and "automatic_object_spilling_enabled", then the
    environment (SHOAL_OBJECT_SPILLING_DIRECTORY, "" for off;
    SHOAL_OBJECT_SPILLING_THRESHOLD; Ray's RAY_object_spilling_config and
    RAY_object_spilling_threshold), then a folder under the system's
    temporary directory."""
    sc = dict(system_config or {})
    env = os.environ
    if not _flag(sc.get("automatic_object_spilling_enabled", True)):
        return SpillConfig()
    if directory is _UNSET:
        raw = sc.get("object_spilling_config", env.get("RAY_object_spilling_config"))
        if raw is not None and raw != "":
            directory = _directories_of(raw)
        elif "SHOAL_OBJECT_SPILLING_DIRECTORY" in env:
            directory = env["SHOAL_OBJECT_SPILLING_DIRECTORY"] or None
        else:
            import tempfile

            directory = tempfile.gettempdir()
    if directory is None:
        return SpillConfig()
    dirs = (directory,) if isinstance(directory, (str, os.PathLike)) else tuple(directory)
    if not dirs or not all(isinstance(d, (str, os.PathLike)) and str(d) for d in dirs):
        raise ValueError(f"object_spilling_directory must be a path or a list of paths, not {directory!r}")
    threshold = sc.get("object_spilling_threshold",
                       env.get("SHOAL_OBJECT_SPILLING_THRESHOLD",
                               env.get("RAY_object_spilling_threshold", DEFAULT_SPILL_THRESHOLD)))
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"object_spilling_threshold must be a number, not {threshold!r}") from None
    if not 0 < threshold <= 1:
        raise ValueError(f"object_spilling_threshold must be in (0, 1], not {threshold}")
    min_bytes = int(sc.get("min_spilling_size", DEFAULT_MIN_SPILLING_SIZE))
    io_threads = int(sc.get("max_io_workers", 2))
    if min_bytes < 0 or io_threads < 1:
        raise ValueError("min_spilling_size must be >= 0 and max_io_workers >= 1")
    return SpillConfig(tuple(os.path.abspath(os.fspath(d)) for d in dirs), threshold, min_bytes, io_threads)


def _directories_of(raw) -> list[str]:
    """The directories of Ray's object_spilling_config (a JSON string or dict)."""
    import json

    try:
        spec = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"object_spilling_config is not valid JSON: {e}") from None
    if spec.get("type", "filesystem") != "filesystem":
        raise ValueError(f"shoal spills to the file system only, not to {spec.get('type')!r} "
                         f"(object_spilling_config type must be \"filesystem\")")
    path = (spec.get("params") or {}).get("directory_path")
    if not path:
        raise ValueError("object_spilling_config needs params.directory_path")
    return [path] if isinstance(path, str) else list(path)


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


#: Ray's memory monitor defaults: kill a worker when more than 95% of the
#: machine's memory is in use, checked every 250 ms; a task it kills is
#: retried after 1 s, doubling up to 60 s.
DEFAULT_MEMORY_USAGE_THRESHOLD = 0.95
DEFAULT_MEMORY_MONITOR_REFRESH_MS = 250
DEFAULT_OOM_RETRY_DELAY_BASE_MS = 1000
OOM_RETRY_DELAY_MAX_S = 60.0


@dataclasses.dataclass(frozen=True)
class MemoryMonitorConfig:
    """How the memory monitor guards the machine (see scheduler/memory_monitor.py)."""

    #: share of the machine's memory (or of the container's limit) in use
    #: beyond which a worker is killed
    threshold: float = DEFAULT_MEMORY_USAGE_THRESHOLD
    #: seconds between two looks at memory; 0: the monitor is off
    refresh_s: float = DEFAULT_MEMORY_MONITOR_REFRESH_MS / 1000
    #: when > 0, also kill once fewer than this many bytes are free (Ray's
    #: min_memory_free_bytes; the larger of the two limits applies)
    min_free_bytes: int = -1
    #: seconds before the first retry of a task the monitor killed (doubles
    #: each time, at most OOM_RETRY_DELAY_MAX_S)
    retry_delay_base_s: float = DEFAULT_OOM_RETRY_DELAY_BASE_MS / 1000

    @property
    def enabled(self) -> bool:
        return self.refresh_s > 0


def memory_monitor_config(system_config: dict | None = None) -> MemoryMonitorConfig:
    """The memory monitor's settings, as in Ray: _system_config's
    "memory_usage_threshold", "memory_monitor_refresh_ms" (0: off),
    "min_memory_free_bytes" and "task_oom_retry_delay_base_ms" first, then
    the environment (SHOAL_MEMORY_USAGE_THRESHOLD, SHOAL_MEMORY_MONITOR_REFRESH_MS,
    or Ray's RAY_memory_usage_threshold, RAY_memory_monitor_refresh_ms,
    RAY_min_memory_free_bytes, RAY_task_oom_retry_delay_base_ms)."""
    sc = dict(system_config or {})
    env = os.environ

    def pick(key: str, shoal_env: str | None, default):
        if key in sc:
            return sc[key]
        for name in ((shoal_env,) if shoal_env else ()) + (f"RAY_{key}",):
            if env.get(name, "") != "":
                return env[name]
        return default

    try:
        threshold = float(pick("memory_usage_threshold", "SHOAL_MEMORY_USAGE_THRESHOLD",
                               DEFAULT_MEMORY_USAGE_THRESHOLD))
        refresh_ms = float(pick("memory_monitor_refresh_ms", "SHOAL_MEMORY_MONITOR_REFRESH_MS",
                                DEFAULT_MEMORY_MONITOR_REFRESH_MS))
        min_free = int(pick("min_memory_free_bytes", None, -1))
        delay_ms = float(pick("task_oom_retry_delay_base_ms", None, DEFAULT_OOM_RETRY_DELAY_BASE_MS))
    except (TypeError, ValueError) as e:
        raise ValueError(f"a memory monitor setting is not a number: {e}") from None
    if not 0 < threshold <= 1:
        raise ValueError(f"memory_usage_threshold must be in (0, 1], not {threshold}")
    if refresh_ms < 0 or delay_ms < 0:
        raise ValueError("memory_monitor_refresh_ms and task_oom_retry_delay_base_ms must be >= 0")
    return MemoryMonitorConfig(threshold, refresh_ms / 1000, min_free, delay_ms / 1000)


@dataclasses.dataclass(frozen=True)
class Config:
    """Runtime tunables. Build with Config.from_env() so SHOAL_* variables apply."""

    #: Seconds a worker may take to start before the runtime reports it.
    worker_start_timeout: float = 30.0
    #: Serialized values up to this size travel inline in messages (bytes).
    inline_object_bytes: int = 100 * 1024
    #: Check scheduler and store invariants after each step (tests).
    validate: bool = False
    #: Note where the driver made each object's first ref (memory_summary).
    record_ref_creation_sites: bool = False
    #: Ended tasks kept for timeline() and the state API (0: none recorded).
    task_events: int = 10_000
    #: Answer `shoal status` and the other tools on a Unix socket.
    control_endpoint: bool = True

    @classmethod
    def from_env(cls) -> "Config":
        return cls(
            worker_start_timeout=float(os.environ.get("SHOAL_WORKER_START_TIMEOUT", 30.0)),
            inline_object_bytes=_env_int("SHOAL_INLINE_OBJECT_BYTES", 100 * 1024) or 0,
            validate=os.environ.get("SHOAL_VALIDATE", "") == "1",
            record_ref_creation_sites=_flag(os.environ.get(
                "SHOAL_RECORD_REF_CREATION_SITES", os.environ.get("RAY_record_ref_creation_sites", ""))),
            task_events=max(0, _env_int("SHOAL_TASK_EVENTS", 10_000) or 0),
            control_endpoint=_flag(os.environ.get("SHOAL_CONTROL_ENDPOINT", "1")),
        )


def runtime_dir() -> str:
    """The folder where running runtimes put their control sockets, one per
    user: SHOAL_RUNTIME_DIR, else $XDG_RUNTIME_DIR/shoal, else
    <temporary directory>/shoal-<uid>. Made mode 0700 when used."""
    override = os.environ.get("SHOAL_RUNTIME_DIR")
    if override:
        return os.path.abspath(override)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "shoal")
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"shoal-{os.getuid()}")
