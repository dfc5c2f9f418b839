"""Failures: errors raised by tasks, their propagation, retries, crashed
workers, cancellation."""

from __future__ import annotations

import os
import pickle
import signal
import time

import pytest

import shoal
from shoal import exceptions as exc
from tests._child import wait_until

pytestmark = pytest.mark.timeout(90)


class MyError(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def test_task_error_is_both_types_with_remote_traceback(ray):
    @ray.remote
    def fails(x):
        raise MyError(f"bad input {x}", 42)

    with pytest.raises(MyError) as info:
        ray.get(fails.remote(7), timeout=30)
    e = info.value
    assert isinstance(e, exc.RayTaskError) and isinstance(e, shoal.exceptions.TaskError)
    assert e.code == 42 and e.args == ("bad input 7",)
    text = str(e)
    assert "fails" in text and "pid=" in text and "bad input 7" in text
    assert "test_api_errors.py" in text and "raise MyError" in text  # the remote traceback
    back = pickle.loads(pickle.dumps(e))
    assert isinstance(back, MyError) and isinstance(back, exc.RayTaskError)


def test_error_propagates_to_dependents(ray):
    @ray.remote
    def fails():
        raise ValueError("root cause")

    @ray.remote
    def add_one(x):
        return x + 1

    @ray.remote
    def never_runs(x):
        raise AssertionError("must not run")

    root = fails.remote()
    chain = add_one.remote(add_one.remote(root))
    for ref in (chain, never_runs.remote(root)):
        with pytest.raises(ValueError, match="root cause"):
            ray.get(ref, timeout=30)


def test_get_of_list_raises_the_first_error(ray):
    @ray.remote
    def maybe(i):
        if i == 2:
            raise KeyError(i)
        return i

    with pytest.raises(KeyError):
        ray.get([maybe.remote(i) for i in range(4)], timeout=30)


def test_unpicklable_exception_is_reported(ray):
    import threading

    class Holder(Exception):
        def __init__(self):
            super().__init__("holds a lock")
            self.lock = threading.Lock()

    @ray.remote
    def fails():
        raise Holder()

    with pytest.raises(exc.RayTaskError, match="could not be pickled"):
        ray.get(fails.remote(), timeout=30)


def test_an_exception_class_that_cannot_be_derived_keeps_its_kind(ray):
    """numpy's _ArrayMemoryError (whose builtin base refuses the usual way
    of deriving from it) is still caught by `except MemoryError`, with its
    message and the remote traceback, as in Ray."""
    import numpy as np

    @ray.remote
    def allocate():
        return np.ones(2**50)  # 8 PiB: beyond any address space

    with pytest.raises(MemoryError) as info:
        ray.get(allocate.remote(), timeout=30)
    e = info.value
    assert isinstance(e, exc.RayTaskError) and type(e.cause).__qualname__ == "_ArrayMemoryError"
    assert "Unable to allocate" in str(e) and "np.ones(2**50)" in str(e)
    back = pickle.loads(pickle.dumps(e))
    assert isinstance(back, MemoryError) and isinstance(back, exc.RayTaskError)


class Final(ValueError):
    """An exception class that refuses subclasses."""

    def __init_subclass__(cls, **kwargs):
        raise TypeError("Final cannot be subclassed")


def test_a_final_exception_class_gives_its_nearest_base(ray):
    @ray.remote
    def fails():
        raise Final("final answer")

    with pytest.raises(ValueError, match="final answer") as info:
        ray.get(fails.remote(), timeout=30)
    assert isinstance(info.value, exc.RayTaskError) and type(info.value.cause) is Final


def test_an_exception_that_does_not_pickle_gives_its_nearest_base_that_does(ray):
    import threading

    class HoldsALock(KeyError):
        def __init__(self, key):
            super().__init__(key)
            self.lock = threading.Lock()

    @ray.remote
    def fails():
        raise HoldsALock("missing")

    with pytest.raises(KeyError) as info:
        ray.get(fails.remote(), timeout=30)
    e = info.value
    assert isinstance(e, exc.RayTaskError) and e.args == ("missing",) and type(e.cause) is KeyError
    assert "raise HoldsALock" in str(e)  # the remote traceback
    assert "could not be pickled" in str(e) and "nearest base class that pickles, KeyError" in str(e)


def test_worker_crash_is_retried_then_reported(ray, tmp_path):
    marker = tmp_path / "attempts"

    @ray.remote(max_retries=2)
    def crash():
        with open(marker, "a") as f:
            f.write("x")
        os._exit(3)

    with pytest.raises(exc.WorkerCrashedError, match="exited with code 3") as info:
        ray.get(crash.remote(), timeout=60)
    assert marker.read_text() == "xxx"  # first run + 2 retries
    assert "max_retries=2" in str(info.value)

    @ray.remote
    def fine():
        return "runtime still works"

    assert ray.get(fine.remote(), timeout=30) == "runtime still works"


def test_sys_exit_in_a_task_reports_its_code_in_one_line(ray, capfd):
    """The worker exits with the code the task passed (retried, as in Ray),
    each attempt says so in one line, and no internal traceback shows."""
    import sys

    @ray.remote(max_retries=1)
    def leaves():
        sys.exit(3)

    with pytest.raises(exc.WorkerCrashedError, match=r"exited with code 3: leaves called sys\.exit\(3\) at "
                                                     r".*test_api_errors\.py, line \d+") as info:
        ray.get(leaves.remote(), timeout=60)
    assert "tried 2 time(s)" in str(info.value)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "(leaves pid=" in line]
    assert len(lines) == 2, err
    assert all("leaves called sys.exit(3)" in line and "exits with code 3" in line for line in lines), err
    assert "Traceback" not in err and "SystemExit" not in err, err


@pytest.mark.parametrize("concurrency", [1, 2])
def test_sys_exit_in_an_actor_method_ends_the_actor_with_its_code(ray, concurrency):
    import sys

    @ray.remote(max_concurrency=concurrency)
    class Leaving:
        def leave(self):
            sys.exit(2)

        def ping(self):
            return "pong"

    actor = Leaving.remote()
    assert ray.get(actor.ping.remote(), timeout=30) == "pong"
    with pytest.raises(exc.ActorDiedError, match=r"exited with code 2: Leaving\.leave called sys\.exit\(2\)"):
        ray.get(actor.leave.remote(), timeout=30)
    with pytest.raises(exc.ActorDiedError):
        ray.get(actor.ping.remote(), timeout=30)


def test_a_native_crash_shows_where_it_happened(ray, capfd):
    """A segfault prints the worker's Python stack (faulthandler) with the
    task's prefix, and the error quotes the user's frames and says where
    the whole report is."""
    import re

    @ray.remote(max_retries=0)
    def crashes():
        import faulthandler

        faulthandler._sigsegv()

    with pytest.raises(exc.WorkerCrashedError, match="SIGSEGV") as info:
        ray.get(crashes.remote(), timeout=60)
    text = str(info.value)
    assert "Fatal Python error: Segmentation fault" in text
    assert re.search(r'File ".*test_api_errors\.py", line \d+ in crashes', text), text
    assert "execution.py" not in text and "forkserver.py" not in text, text
    err = capfd.readouterr().err
    found = re.search(r"\(crashes pid=(\d+)\) Fatal Python error: Segmentation fault", err)
    assert found, err
    prefix = f"(crashes pid={found[1]})"
    assert re.search(re.escape(prefix) + r'   File ".*test_api_errors\.py", line \d+ in crashes', err), err
    assert f"prefixed with {prefix}" in text


def test_crash_recovered_by_retry(ray, tmp_path):
    marker = tmp_path / "crashed-once"

    @ray.remote(max_retries=1)
    def flaky():
        if not marker.exists():
            marker.write_text("1")
            os.kill(os.getpid(), signal.SIGKILL)
        return "second attempt"

    assert ray.get(flaky.remote(), timeout=60) == "second attempt"


def test_killed_worker_message_names_the_signal(ray):
    @ray.remote(max_retries=0)
    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(exc.WorkerCrashedError, match="SIGKILL"):
        ray.get(die.remote(), timeout=60)


def test_retry_exceptions(ray, tmp_path):
    counter = tmp_path / "n"
    counter.write_text("0")

    @ray.remote(max_retries=3, retry_exceptions=[ConnectionError])
    def flaky():
        n = int(counter.read_text()) + 1
        counter.write_text(str(n))
        if n < 3:
            raise ConnectionError("transient")
        return n

    assert ray.get(flaky.remote(), timeout=30) == 3

    @ray.remote(max_retries=3, retry_exceptions=[ConnectionError])
    def other():
        counter.write_text(str(int(counter.read_text()) + 1))
        raise ValueError("not retried")

    counter.write_text("0")
    with pytest.raises(ValueError):
        ray.get(other.remote(), timeout=30)
    assert counter.read_text() == "1"

    @ray.remote(max_retries=2, retry_exceptions=True)
    def always():
        counter.write_text(str(int(counter.read_text()) + 1))
        raise RuntimeError("always")

    counter.write_text("0")
    with pytest.raises(RuntimeError):
        ray.get(always.remote(), timeout=30)
    assert counter.read_text() == "3"


def test_cancel_queued_and_running(ray):
    @ray.remote
    def sleeper(s):
        time.sleep(s)
        return s

    running = [sleeper.remote(30) for _ in range(2)]  # fill both CPUs
    queued = sleeper.remote(0)
    ray.cancel(queued)
    with pytest.raises(exc.TaskCancelledError):
        ray.get(queued, timeout=30)
    ray.cancel(running[0])
    with pytest.raises(exc.TaskCancelledError):
        ray.get(running[0], timeout=30)
    ray.cancel(running[1], force=True)
    with pytest.raises(exc.TaskCancelledError):
        ray.get(running[1], timeout=30)
    assert ray.get(sleeper.remote(0), timeout=30) == 0  # still usable
    kept = ray.put(1)
    ray.cancel(kept)  # nothing to cancel, as in Ray
    assert ray.get(kept, timeout=30) == 1


def test_cancel_right_after_submission_is_never_ignored(ray):
    """The task may already sit on an idle worker, not started: it must
    still end cancelled, not run."""
    @ray.remote
    def f():
        time.sleep(0.2)
        return "ran"

    ray.get([f.remote() for _ in range(2)], timeout=30)  # workers up and known
    for _ in range(10):
        ref = f.remote()
        ray.cancel(ref)
        with pytest.raises(exc.TaskCancelledError):
            ray.get(ref, timeout=30)


def test_keyboard_interrupt_in_a_task_is_a_cancellation_not_a_crash(ray):
    @ray.remote
    def interrupted():
        raise KeyboardInterrupt()

    with pytest.raises(exc.TaskCancelledError):
        ray.get(interrupted.remote(), timeout=30)
    assert ray.get(ray.remote(lambda: 1).remote(), timeout=30) == 1


def test_a_task_may_catch_its_cancellation(ray, tmp_path):
    """As in Ray, cancel() raises KeyboardInterrupt in the task: code that
    catches it decides the result."""
    started = tmp_path / "started"

    @ray.remote
    def stubborn():
        started.touch()
        try:
            time.sleep(30)
        except KeyboardInterrupt:
            return "caught"

    ref = stubborn.remote()
    wait_until(started.exists, timeout=30, what="the task to start")
    ray.cancel(ref)
    assert ray.get(ref, timeout=30) == "caught"


def test_every_public_exception_pickles():
    errors = [
        exc.RayTaskError("f", "tb", ValueError("x"), 1),
        exc.RayTaskError("f", "tb", ValueError("x"), 1).as_instanceof_cause(),
        exc.WorkerCrashedError("w"), exc.TaskCancelledError("c"), exc.ObjectLostError("l"),
        exc.GetTimeoutError("t"), exc.RayActorError("a", "id"), exc.ActorDiedError("d"),
        exc.ActorUnavailableError("u"), exc.RaySystemError("s"), exc.RuntimeClosedError("r"),
        exc.ObjectStoreFullError(1, 2, 3, 4), exc.ActorAlreadyExistsError("n"),
    ]
    for e in errors:
        back = pickle.loads(pickle.dumps(e))
        assert type(back).__name__ == type(e).__name__ and str(back) == str(e)


def test_retry_after_a_crash_between_two_returns(ray, tmp_path):
    """The first attempt seals return 0 and dies before return 1: the
    retry keeps the sealed value instead of failing on it."""
    marker = tmp_path / "crashed"

    class CrashOnce:
        def __reduce__(self):
            if not marker.exists():
                marker.touch()
                os._exit(1)
            return (int, (7,))

    @ray.remote(num_returns=2, max_retries=1)
    def two():
        return "first", CrashOnce()

    a, b = two.remote()
    assert ray.get([a, b], timeout=30) == ["first", 7]
    assert marker.exists()


def test_a_stale_or_forged_done_message_is_refused(ray, capfd):
    """Code in a worker that reports a task finished which that worker is
    not running (one that never existed, one that ended long ago) changes
    nothing in the driver: it is logged and ignored."""
    from shoal import objectref
    from shoal.scheduler import protocol as P

    @ray.remote
    def forge():
        ctx = objectref.current()
        ctx.send((P.DONE, 10**9, P.OK, 0.0, {}, (0.0, 0, 0, None)))
        ctx.send((P.DONE, ctx.current_seq - 1, P.OK, 0.0, {}, (0.0, 0, 0, None)))
        return "mine"

    @ray.remote
    def square(x):
        return x * x

    assert ray.get(square.remote(3), timeout=30) == 9
    assert ray.get(forge.remote(), timeout=30) == "mine"
    assert ray.get([square.remote(i) for i in range(20)], timeout=30) == [i * i for i in range(20)]
    shell = objectref.current().shell
    with shell.lock:
        shell.check()
        assert shell.broken is None
    err = capfd.readouterr().err
    assert err.count("saying that task") == 2 and "nothing changed" in err, err


def test_an_argument_that_does_not_pickle_is_named(ray):
    """The message names the argument (position or keyword) and its type,
    not the tuple of all arguments; for actor calls too."""
    import threading

    @ray.remote
    def takes(x, y=None):
        return 1

    @ray.remote
    class Keeper:
        def keep(self, thing):
            return 1

    lock = threading.Lock()
    with pytest.raises(TypeError, match=r"argument 0 of takes\(\), a _thread\.lock, cannot be serialized: "
                                        r"cannot pickle '_thread\.lock' object\. .*inside the task"):
        takes.remote(lock)
    with pytest.raises(TypeError, match=r"keyword argument 'y' of takes\(\), a dict, cannot be serialized"):
        takes.remote(1, y={"held": lock})
    with pytest.raises(TypeError, match=r"argument 0 of Keeper\.keep\(\), a _thread\.lock"):
        Keeper.remote().keep.remote(lock)
    with pytest.raises(TypeError, match=r"cannot serialize a _thread\.lock: cannot pickle"):
        ray.put(lock)
    assert ray.get(takes.remote(1, y=2), timeout=30) == 1  # nothing left behind


def test_type_names_take_the_right_article(ray):
    with pytest.raises(TypeError, match="it holds an int$"):
        ray.get([ray.put(1), 1])
    with pytest.raises(TypeError, match="it holds a str$"):
        ray.wait([ray.put(1), "x"])


def test_a_result_that_does_not_pickle_points_at_the_users_function(ray):
    """A return value (or a yielded item) that does not pickle is reported
    at the function that produced it, not at shoal's frames."""
    import threading

    @ray.remote
    def returns_a_lock():
        return threading.Lock()

    @ray.remote
    def yields_a_lock():
        yield 1
        yield threading.Lock()

    @ray.remote
    class Keeper:
        def lock(self):
            return threading.Lock()

    def_line = returns_a_lock.__wrapped__.__code__.co_firstlineno + 1  # below the decorator
    with pytest.raises(TypeError) as info:
        ray.get(returns_a_lock.remote(), timeout=30)
    text = str(info.value)
    assert isinstance(info.value, exc.RayTaskError)
    assert "returns_a_lock() returned a _thread.lock, which cannot be serialized" in text
    assert f'test_api_errors.py", line {def_line}, in returns_a_lock' in text
    assert "execution.py" not in text and "serialization.py" not in text, text
    gen = yields_a_lock.remote()
    assert ray.get(next(gen), timeout=30) == 1
    with pytest.raises(TypeError, match=r"yields_a_lock\(\) yielded, as item 2, a _thread\.lock"):
        ray.get(next(gen), timeout=30)
    with pytest.raises(TypeError, match=r"Keeper\.lock\(\) returned a _thread\.lock") as info:
        ray.get(Keeper.remote().lock.remote(), timeout=30)
    assert "execution.py" not in str(info.value)


def test_writing_into_a_stored_array_says_why_it_is_read_only(ray):
    import numpy as np

    @ray.remote
    def scale(a):
        a *= 2
        return a

    @ray.remote
    def scale_a_copy(a):
        a = a.copy()
        a *= 2
        return a

    ref = ray.put(np.ones(4))
    with pytest.raises(ValueError, match="read-only") as info:
        ray.get(scale.remote(ref), timeout=30)
    assert "zero-copy views of shared memory and read-only; call .copy()" in str(info.value)
    assert ray.get(scale_a_copy.remote(ref), timeout=30).tolist() == [2.0] * 4
    assert not ray.get(ref, timeout=30).flags.writeable
