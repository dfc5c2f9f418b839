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


def test_cancel_from_an_actor_interrupts_a_task_with_rays_error_type(ray):
    # cancel() works in tasks and actors too (the driver carries it out). A
    # task interrupted while it ran raises RayTaskError and
    # TaskCancelledError, as in Ray; one cancelled before it started, only
    # TaskCancelledError.
    @ray.remote
    def waits(signal):
        ray.get(signal.wait.remote())
        return "not cancelled"

    @ray.remote(num_cpus=0)
    class Canceller:
        def cancel(self, refs, force=False):
            ray.cancel(refs[0], force=force)
            return "cancelled"

    from shoal.util import state

    signal = signal_actor(ray)
    running = waits.remote(signal)
    wait_until(lambda: state.summarize_tasks().get("waits", {}).get("RUNNING") == 1, 30, "the task running")
    canceller = Canceller.remote()
    assert ray.get(canceller.cancel.remote([running]), timeout=30) == "cancelled"
    with pytest.raises(exc.RayTaskError, match=f"{running.task_id().hex()}.* was cancelled while it ran") as info:
        ray.get(running, timeout=30)
    assert isinstance(info.value, exc.TaskCancelledError)

    @ray.remote
    def never_starts(_):
        return 1

    queued = never_starts.remote(signal.wait.remote())  # waits for its argument
    ray.get(canceller.cancel.remote([queued]), timeout=30)
    with pytest.raises(exc.TaskCancelledError, match=queued.task_id().hex()) as info:  # named, as in Ray
        ray.get(queued, timeout=30)
    assert not isinstance(info.value, exc.RayTaskError)
    # force=True on an actor call is refused in the caller, as from the driver.
    with pytest.raises(ValueError, match="force=True is not supported"):
        ray.get(canceller.cancel.remote([signal.wait.remote()], True), timeout=30)
    ray.get(signal.send.remote(), timeout=30)


@pytest.mark.parametrize("concurrency", [1, 2], ids=["sync", "threaded"])
def test_a_running_actor_call_sees_its_cancel_and_its_result_is_dropped(ray, concurrency, tmp_path):
    # As in Ray: cancel() does not interrupt a running call of a sync or
    # threaded actor; the call may see it with is_canceled(), and get()
    # raises TaskCancelledError whatever it returns.
    import time

    started = tmp_path / "started"

    @ray.remote(num_cpus=0)
    class Polite:
        def __init__(self):
            self.seen = []

        def work(self):
            started.touch()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # (sleeps stand for work)
                if ray.get_runtime_context().is_canceled():
                    self.seen.append("cancel")
                    return "returned early"
                time.sleep(0.01)
            return "never saw it"

        def quick(self):
            return "quick"

        def log(self):
            return self.seen

    actor = Polite.options(max_concurrency=concurrency).remote()
    assert ray.get(actor.quick.remote(), timeout=30) == "quick"  # not cancelled: its value
    ref = actor.work.remote()
    wait_until(started.exists, 30, "the call running")
    ray.cancel(ref)
    with pytest.raises(exc.TaskCancelledError):
        ray.get(ref, timeout=30)
    assert ray.get(actor.log.remote(), timeout=30) == ["cancel"]


def test_many_async_calls_cancelled_as_they_come_all_end_cancelled(ray):
    # A call cancelled after its process took it but before its first step
    # never entered its handler; it reported nothing and its get() hung.
    import concurrent.futures

    @ray.remote(num_cpus=0)
    class Sleeper:
        async def sleep(self, i):
            await asyncio.sleep(60)

    sleeper = Sleeper.remote()
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        refs = list(pool.map(lambda i: sleeper.sleep.remote(i), range(2000)))
    for ref in reversed(refs):
        ray.cancel(ref)
    for ref in refs:
        with pytest.raises(exc.TaskCancelledError):
            ray.get(ref, timeout=60)


def test_a_cancelled_await_leaves_later_awaits_working(ray):
    # The await of a ref in a cancelled call cancels its future; completing
    # that future later killed the thread that completes every await.
    signal = signal_actor(ray)

    @ray.remote
    class Awaiter:
        async def wait_for(self, refs):
            return await refs[0]

    awaiter = Awaiter.remote()
    first = awaiter.wait_for.remote([signal.wait.remote()])
    ray.wait([first], timeout=0.5)
    ray.cancel(first)
    with pytest.raises(exc.TaskCancelledError):
        ray.get(first, timeout=30)
    ray.get(signal.send.remote(), timeout=30)  # the cancelled await's object is sealed now
    assert ray.get(awaiter.wait_for.remote([ray.put("later")]), timeout=30) == "later"
    gated = awaiter.wait_for.remote([signal.wait.remote()])
    assert ray.get(gated, timeout=30) is None


def test_is_canceled_is_refused_in_an_asyncio_actor(ray):
    @ray.remote
    class Async:
        async def ask(self):
            return ray.get_runtime_context().is_canceled()

    with pytest.raises(RuntimeError, match="not supported in an async actor"):
        ray.get(Async.remote().ask.remote(), timeout=30)


@pytest.mark.parametrize("recursive", [True, False])
def test_recursive_cancel_goes_down_a_chain_of_actor_calls(ray, recursive):
    # As in Ray: cancelling a call (or task) cancels the actor calls it made,
    # and theirs; recursive=False leaves them to finish.
    signal = signal_actor(ray)

    @ray.remote
    class Link:
        def __init__(self, child=None):
            self.child = child
            self.child_ref = None

        async def run(self, signal):
            if self.child is None:
                await signal.wait.remote()
                return "bottom"
            self.child_ref = self.child.run.remote(signal)
            return await self.child_ref

        def child_refs(self):
            return [self.child_ref]

    bottom = Link.remote()
    middle = Link.remote(bottom)
    top = Link.remote(middle)
    ref = top.run.remote(signal)
    wait_until(lambda: ray.get(middle.child_refs.remote(), timeout=30)[0] is not None, 30, "the chain built")
    ray.cancel(ref, recursive=recursive)
    with pytest.raises(exc.TaskCancelledError):
        ray.get(ref, timeout=30)
    ray.get(signal.send.remote(), timeout=30)
    (middle_call,) = ray.get(top.child_refs.remote(), timeout=30)
    (bottom_call,) = ray.get(middle.child_refs.remote(), timeout=30)
    if recursive:
        for child in (middle_call, bottom_call):
            with pytest.raises(exc.TaskCancelledError):
                ray.get(child, timeout=30)
    else:
        assert ray.get([middle_call, bottom_call], timeout=30) == ["bottom", "bottom"]
