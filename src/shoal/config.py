"""Tunables and machine facts; every SHOAL_* environment variable is read
here and nowhere else (stdlib only)."""

from __future__ import annotations

import dataclasses
import os

#: Share of the machine's memory the object store takes by default (Ray: 30%).
DEFAULT_STORE_FRACTION = 0.3
#: The store is never made smaller than this (Ray: 75 MiB).
MIN_STORE_BYTES = 75 << 20
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


def copy_threads(nbytes: int) -> int:
    """Threads for copying `nbytes` into the store: one below
    PARALLEL_COPY_BYTES, else up to one per core (at most 4)."""
    if nbytes < PARALLEL_COPY_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


@dataclasses.dataclass(frozen=True)
class Config:
    """Runtime tunables. Build with Config.from_env() so SHOAL_* variables apply."""

    #: Seconds a worker may take to start before the runtime reports it.
    worker_start_timeout: float = 30.0
    #: Serialized values up to this size travel inline in messages (bytes).
    inline_object_bytes: int = 100 * 1024
    #: Check scheduler and store invariants after each step (tests).
    validate: bool = False

    @classmethod
    def from_env(cls) -> "Config":
        return cls(
            worker_start_timeout=float(os.environ.get("SHOAL_WORKER_START_TIMEOUT", 30.0)),
            inline_object_bytes=_env_int("SHOAL_INLINE_OBJECT_BYTES", 100 * 1024) or 0,
            validate=os.environ.get("SHOAL_VALIDATE", "") == "1",
        )
