"""The actors' state machine (scheduler/actors.py) on its own: calls whose
arguments are not ready are held per caller, as in Ray."""

from __future__ import annotations

from typing import NamedTuple

from shoal import exceptions as exc
from shoal.scheduler import actors as A


class _Spec(NamedTuple):
    method: str = "f"


class _ActorSpec(NamedTuple):
    class_name: str = "Counter"


def alive_actor(table: A.ActorTable) -> A.Actor:
    actor = A.Actor(b"a" * 16, spec=_ActorSpec())
    table.create(actor)
    table.placed(actor, wid=7)
    table.process_ready(actor)
    table.constructed(actor, None)
    return actor


def sent(actions) -> list[int]:
    return [a.call.seq for a in actions if type(a) is A.SendCall]


def test_a_call_waiting_for_its_arguments_holds_up_only_its_own_callers_calls():
    t = A.ActorTable()
    actor = alive_actor(t)
    assert t.call(actor, A.Call(1, _Spec()), caller="x", unsealed=[b"slow"]) == []
    assert t.call(actor, A.Call(2, _Spec()), caller="x") == []  # behind 1: same caller
    assert sent(t.call(actor, A.Call(3, _Spec()), caller="y")) == [3]  # another caller goes on
    assert sent(t.object_sealed(b"other")) == []
    assert sent(t.object_sealed(b"slow")) == [1, 2]  # in x's order
    assert not actor.held and not t.waiting_on


def test_cancelling_the_held_head_lets_the_next_call_go():
    t = A.ActorTable()
    actor = alive_actor(t)
    t.call(actor, A.Call(1, _Spec()), caller="x", unsealed=[b"slow"])
    t.call(actor, A.Call(2, _Spec()), caller="x")
    assert t.cancel_queued(actor, 1).seq == 1
    assert sent(t.release_held(actor)) == [2]
    assert sent(t.object_sealed(b"slow")) == []  # the cancelled call is gone


def test_a_collected_actor_stops_only_once_its_held_calls_went():
    t = A.ActorTable()
    actor = alive_actor(t)
    t.call(actor, A.Call(1, _Spec()), caller="x", unsealed=[b"slow"])
    assert t.handles_gone(actor) == []  # the held call was submitted before
    actions = t.object_sealed(b"slow")
    assert [type(a) for a in actions] == [A.SendCall, A.StopProcess]


def test_held_calls_fail_with_the_actor_and_count_as_pending():
    t = A.ActorTable()
    actor = alive_actor(t)
    actor.max_pending = 2
    t.call(actor, A.Call(1, _Spec()), caller="x", unsealed=[b"slow"])
    t.call(actor, A.Call(2, _Spec()), caller="x")
    (full,) = t.call(actor, A.Call(3, _Spec()), caller="y")
    assert type(full) is A.FailCalls and isinstance(full.error, exc.PendingCallsLimitExceeded)
    assert [type(a) for a in t.kill(actor, no_restart=True)] == [A.KillProcess]
    failed = [c.seq for a in t.process_died(actor, "killed") if type(a) is A.FailCalls for c in a.calls]
    assert failed == [1, 2] and actor.state == "dead" and not actor.held
    assert t.object_sealed(b"slow") == []  # nothing left to admit
