"""What the soak (bench/soak.py) found growing, kept from coming back: dead
actors stay in the driver's tables only while a handle can name them, and
killing an actor just after its call sealed its result (before the driver
read its DONE) stores no error object that nothing frees."""

from __future__ import annotations

import pytest

from shoal import exceptions as exc
from shoal.scheduler import actors as A
from tests.test_actor_calls_state import _ActorSpec, alive_actor

pytestmark = pytest.mark.timeout(120)


def test_a_dead_actor_without_handles_is_retired_in_either_order():
    t = A.ActorTable()
    killed_first = alive_actor(t)
    t.kill(killed_first, True)
    t.process_died(killed_first, "it was killed by SIGKILL")
    assert killed_first.actor_id in t.actors  # a handle may still call it: it must answer why
    t.handles_gone(killed_first)
    assert killed_first.actor_id not in t.actors and list(t.retired) == [killed_first]

    t = A.ActorTable()
    dropped_first = alive_actor(t)
    t.handles_gone(dropped_first)  # stops it...
    assert dropped_first.actor_id in t.actors
    t.process_died(dropped_first, "it exited")  # ...and once it is gone, it is retired
    assert not t.actors and list(t.retired) == [dropped_first]


def test_retired_actors_are_bounded():
    t = A.ActorTable()
    for i in range(A.DEAD_ACTORS_KEPT + 50):
        actor = A.Actor(i.to_bytes(16, "little"), spec=_ActorSpec())
        t.create(actor)
        t.handles_gone(actor)  # never placed: dead at once
    assert not t.actors and len(t.retired) == A.DEAD_ACTORS_KEPT


def test_actors_created_and_killed_leave_nothing_growing(ray):
    import os

    from shoal import objectref
    from shoal.util import state

    @ray.remote
    class Churn:
        def ping(self):
            return os.getpid()

    shell = objectref.current().shell
    kept = Churn.remote()
    ray.get(kept.ping.remote())
    for _ in range(15):
        a = Churn.remote()
        ray.get(a.ping.remote())
        ray.kill(a)
        del a
    ray.kill(kept)
    ray.get(ray.remote(lambda: 1).remote())  # (the handles' drops are applied by now)
    from tests._child import wait_until

    wait_until(lambda: len(shell.actors.actors) <= 1, 30, "dead actors retired")
    assert kept._actor_id in shell.actors.actors  # still named by a handle
    with pytest.raises(exc.ActorDiedError, match="kill"):
        ray.get(kept.ping.remote(), timeout=30)
    dead = [a for a in state.list_actors() if a["state"] == "DEAD"]
    assert len(dead) == 16  # still listed, as Ray lists destroyed actors
    assert not hasattr(shell, "exit_codes")


def test_killing_an_actor_right_after_its_result_leaves_no_object(ray):
    import os

    from shoal import objectref

    @ray.remote
    class Churn:
        def ping(self):
            return os.getpid()

    rt = objectref.current()
    for _ in range(30):
        a = Churn.remote()
        ray.get(a.ping.remote())  # wakes on the seal: the DONE may still be on its way
        ray.kill(a)  # often lands before it is read
        del a
    rt.shell.sync()
    from tests._child import wait_until

    # Only the class's definition stays (errors stored for freed results used to pile up).
    wait_until(lambda: (rt.shell.sync(), rt.store.statistics().num_objects)[1] <= 1, 30, "the objects freed")
