"""Fixtures shared by every test, and the leak checks that run after each.

After every test: no child process is left (zombies included), nothing named
shoal is in /dev/shm, this process holds no more store segments than
before (a store handle that was never closed or collected), and no runtime
left a spill folder in the temp directory.
"""

from __future__ import annotations

import gc
import os
import tempfile

import psutil
import pytest

from tests._child import shm_entries


def store_fds() -> int:
    """Descriptors of this process that are store segments (memfds)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:shoal-store"):
                n += 1
        except OSError:
            pass
    return n


def dead_spill_folders() -> set[str]:
    """Spill folders in the temp directory that no live runtime holds, of
    runtimes this process or its children ran (other programs' do not count)."""
    from shoal.spill.directory import PREFIX, _is_dead

    tmp = tempfile.gettempdir()
    ours = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    try:
        names = [n for n in os.listdir(tmp) if n.startswith(PREFIX)]
        names = [n for n in names if n[len(PREFIX):].split("-")[0].isdigit()
                 and (int(n[len(PREFIX):].split("-")[0]) in ours or not psutil.pid_exists(
                     int(n[len(PREFIX):].split("-")[0])))]
    except OSError:
        return set()
    return {n for n in names if _is_dead(os.path.join(tmp, n))}


@pytest.fixture(autouse=True)
def no_leaks():
    spill_before = dead_spill_folders()
    shm_before = shm_entries()
    fds_before = store_fds()
    yield
    gc.collect()
    me = psutil.Process()
    children = me.children(recursive=True)
    if children:
        # Children that are exiting get a short grace period, then count.
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, "child processes left behind: " + ", ".join(
            f"{p.pid} {p.status()} {' '.join(p.cmdline()[:4])}" for p in alive
        )
    leaked = shm_entries() - shm_before
    assert not leaked, f"/dev/shm entries left behind: {sorted(leaked)}"
    assert store_fds() <= fds_before, "a store handle was left open"
    # A driver that died has its folder removed by its fork server, which
    # may still be at it: a grace period, as for exiting children.
    from tests._child import wait_until

    try:
        wait_until(lambda: not dead_spill_folders() - spill_before, timeout=5, what="spill folders to go")
    except AssertionError:
        left = sorted(dead_spill_folders() - spill_before)
        raise AssertionError(f"spill folders left behind in {tempfile.gettempdir()}: {left}") from None


@pytest.fixture
def ray():
    """A runtime with 2 CPUs and a 256 MiB store, invariants checked after
    every step; shut down after the test."""
    import shoal

    os.environ["SHOAL_VALIDATE"] = "1"
    try:
        shoal.init(num_cpus=2, object_store_memory=256 << 20)
    finally:
        os.environ.pop("SHOAL_VALIDATE", None)
    try:
        yield shoal
    finally:
        shoal.shutdown()


@pytest.fixture
def store():
    """A small store (64 MiB), closed after the test."""
    from shoal.store import ObjectStore

    s = ObjectStore.open(64 << 20, max_objects=4096)
    try:
        yield s
    finally:
        s.close()
