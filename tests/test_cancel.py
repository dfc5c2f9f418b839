"""cancel() as in Ray: interrupts land only in user code, dependents fail
promptly, and (recursive=True, the default) a task's children go with it."""

from __future__ import annotations

import asyncio

import pytest

from shoal import exceptions as exc
from tests._child import wait_until

pytestmark = pytest.mark.timeout(180)

CANCELLED = (exc.TaskCancelledError, exc.RayTaskError)


def signal_actor(ray):
    @ray.remote(num_cpus=0)
    class Signal:
        def __init__(self):
            self.event = asyncio.Event()

        async def wait(self):
            await self.event.wait()

        async def send(self):
            self.event.set()

    return Signal.remote()


def test_cancel_of_a_task_blocked_on_an_actor_call_fails_its_dependents(ray):
    @ray.remote
    def wait_for(refs):
        return ray.get(refs[0])

    # The cancel lands at every moment of the head task's life: before it
    # starts, while its arguments are read, while it blocks (the interrupt
    # may arrive inside the worker's own bookkeeping, where it must wait).
    for delay in [0, 0.0005, 0.001, 0.002, 0.005, 0.01] * 5:
        signal = signal_actor(ray)
        head = wait_for.remote([signal.wait.remote()])
        dependents = [wait_for.remote([head]) for _ in range(3)]
        ray.wait([head], timeout=delay)
        ray.cancel(head)
        for d in dependents:
            with pytest.raises(CANCELLED):
                ray.get(d, timeout=30)
        later = [wait_for.remote([head]) for _ in range(3)]  # on the cancelled ref
        for d in later:
            with pytest.raises(CANCELLED):
                ray.get(d, timeout=30)
        ray.get(signal.send.remote(), timeout=30)


def test_cancelling_a_parent_cancels_its_children_and_frees_their_cpus():
    # (recursive=False is pinned in test_scheduler_state.py.)
    import shoal as ray

    ray.init(num_cpus=4)
    try:
        @ray.remote(num_cpus=1)
        def child():
            import threading

            threading.Event().wait()  # holds its CPU until interrupted

        @ray.remote(num_cpus=1)
        def parent():
            ray.get(child.remote())  # blocked: its own CPU is lent meanwhile

        @ray.remote(num_cpus=4)
        def needs_all():
            return "ran"

        p = parent.remote()
        wait_until(lambda: ray.available_resources().get("CPU", 0) == 3, what="the child to run")
        ray.cancel(p)
        with pytest.raises(CANCELLED):
            ray.get(p, timeout=30)
        assert ray.get(needs_all.remote(), timeout=60) == "ran"  # the child's CPU is free
    finally:
        ray.shutdown()
