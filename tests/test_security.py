"""The store and the rings stay within the runtime's processes: a program
that a task or an actor starts inherits none of their descriptors, and the
memfds are readable and writable by their owner only."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.timeout(60)

#: Run by a program a task starts with close_fds=False: what it holds.
LIST_FDS = """
import os
held = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        held[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # the descriptor listdir used, closed by now
        pass
print(repr(held))
"""


def start_a_program():
    """In a worker: start a program that keeps every inheritable descriptor
    (close_fds=False) and return the descriptors it holds."""
    import ast
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LIST_FDS], close_fds=False, capture_output=True,
                         text=True, timeout=30, check=True)
    return ast.literal_eval(out.stdout)


def assert_holds_nothing_of_the_runtime(held: dict) -> None:
    leaked = {fd: target for fd, target in held.items()
              if fd > 2 or "shoal" in target or "eventfd" in target}
    assert not leaked, f"a program started by a task holds the runtime's descriptors: {leaked}"


def test_programs_started_by_tasks_and_actors_inherit_no_store_or_ring(ray):
    run = ray.remote(start_a_program)

    @ray.remote
    class Starter:
        def start(self):
            return start_a_program()

    assert_holds_nothing_of_the_runtime(ray.get(run.remote(), timeout=30))
    assert_holds_nothing_of_the_runtime(ray.get(Starter.remote().start.remote(), timeout=30))
    # The worker itself still holds the store (the check above is not vacuous).
    @ray.remote
    def own_descriptors():
        return [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{fd}")]

    assert any(t.startswith("/memfd:shoal-store") for t in ray.get(own_descriptors.remote(), timeout=30))


def test_the_fork_server_keeps_its_descriptors_close_on_exec(ray):
    """The store and the driver's socket reach the fork server through
    exec; it sets close-on-exec on them again at once (its forks, the
    workers, keep them)."""
    from shoal import objectref

    @ray.remote
    def ping():
        return 1

    assert ray.get(ping.remote(), timeout=30) == 1  # the fork server is past its start-up
    pid = objectref.current().shell.pool.proc.pid
    checked = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
        except (OSError, StopIteration):
            continue
        if int(fd) > 2:
            checked.append(target)
            assert flags & os.O_CLOEXEC, f"fork server fd {fd} ({target}) is inheritable"
    assert any(t.startswith("/memfd:shoal-store") for t in checked), checked


def test_store_and_ring_memfds_are_owner_only(store):
    from shoal.scheduler.pool import WorkerHandle

    assert os.fstat(store.fd).st_mode & 0o777 == 0o600
    h = WorkerHandle(1, 1 << 16)
    try:
        assert os.fstat(h.channel_fd).st_mode & 0o777 == 0o600
    finally:
        h.close()
