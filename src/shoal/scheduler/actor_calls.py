"""The shell's side of actors: creating, calling, finding and killing them,
and carrying out the actor table's actions (scheduler/actors.py).

ActorCalls is mixed into Shell (shell.py) and uses its state: the lock, the
actor table, the reference table, the workers' handles and _execute. It is
apart only to keep each file readable.
"""

from __future__ import annotations

import signal
from time import perf_counter as _clock

from shoal import exceptions as exc
from shoal.scheduler import actors as A
from shoal.scheduler import protocol as P
from shoal.scheduler.state import shape_amounts


class ActorCalls:
    def create_actor(self, actor: A.Actor, deps: list, held: list) -> None:
        """Register and place an actor (raises ActorAlreadyExistsError)."""
        with self.lock:
            if self.closed:
                raise exc.RuntimeClosedError("the runtime was shut down")
            self._apply_driver_refs()
            self._create_actor(actor, deps, held)

    def _create_actor(self, actor: A.Actor, deps: list, held: list) -> None:
        actor.creation_seq = next(self._seq)
        actions = self.actors.create(actor)
        if held:  # the constructor's arguments live as long as the actor may restart
            self.refs.hold_for_task(actor.creation_seq, held)
            self.shared.update(held)
        self._execute(actions)

    def call_actor(self, actor_id: bytes, spec, deps: list, held: list) -> None:
        """Submit a call from the driver; raises PendingCallsLimitExceeded
        at once, as Ray does, when the actor has max_pending_calls queued."""
        with self.lock:
            if self.closed:
                raise exc.RuntimeClosedError("the runtime was shut down")
            actor = self.actors.actors.get(actor_id)
            full = self.actors.pending_limit_error(actor) if actor is not None else None
            if full is not None:
                self._read_rings()  # calls may have ended without our having read it yet
                self.wake()  # (the I/O thread collects what those messages released)
                full = self.actors.pending_limit_error(actor)
                if full is not None:
                    raise full
            self._apply_driver_refs()
            self._call_actor(actor_id, spec, held, deps)

    def _find_actor(self, actor_id: bytes) -> A.Actor | None:
        actor = self.actors.actors.get(actor_id)
        if actor is None and not self._reading:
            # Made by a worker whose CREATE_ACTOR we have not read yet: it was
            # sent before anything that let us learn the actor's id.
            self._read_rings()
            actor = self.actors.actors.get(actor_id)
        return actor

    def _call_actor(self, actor_id: bytes, spec, held: list, deps: list = (), caller: int = 0,
                    parent: bytes | None = None) -> None:
        """A call from process `caller` (0: the driver) with arguments `deps`
        (refs at the top level), made by task or call `parent` (if any): it
        goes to the actor once they are sealed."""
        actor = self._find_actor(actor_id)
        if actor is None and self._reading:
            # Inside a pass over the rings: the actor's creation may be in a
            # ring not read yet in this pass; retry at the end of the pass.
            self._orphans.append((actor_id, spec, held, deps, caller, parent))
            return
        if actor is None:
            self.store.put_error(P.return_ids(spec), exc.ActorDiedError(
                f"no actor {actor_id.hex()} in this runtime", actor_id.hex()))
            return
        seq = next(self._seq)
        self.calls[seq] = actor
        self.by_task_id[spec.task_id] = seq
        if held:
            self.refs.hold_for_task(seq, held)
            self.shared.update(held)
        unsealed = []
        if deps:
            mask = self.store.raw.sealed_mask(deps)
            unsealed = [d for d, ok in zip(deps, mask) if not ok]
        call = A.Call(seq, spec)
        if self.events is not None:
            call.submitted = _clock()
        self._execute(self.actors.call(actor, call, caller, unsealed))
        self._execute(self.sched.actor_call_submitted(spec.task_id, parent))

    def named_actor(self, name: str, namespace: str) -> A.Actor | None:
        with self.lock:
            actor = self.actors.named(name, namespace)
            if actor is None:
                self._read_rings()
                actor = self.actors.named(name, namespace)
            return actor

    def kill_actor(self, actor_id: bytes, no_restart: bool) -> None:
        with self.lock:
            actor = self._find_actor(actor_id)
            if actor is not None:
                self._execute(self.actors.kill(actor, no_restart))

    def wait_actor_gone(self, actor_id: bytes, timeout: float | None) -> bool:
        """Wait until the actor is dead and its process has exited (its
        resources are free then). False if `timeout` seconds passed first."""
        with self.lock:
            return self.process_exited.wait_for(lambda: self.closed or self._actor_gone(actor_id), timeout)

    def _actor_gone(self, actor_id: bytes) -> bool:
        actor = self._find_actor(actor_id)
        return actor is None or (actor.state == "dead" and actor.wid not in self.workers)

    def _call_ended(self, actor: A.Actor, call: A.Call) -> None:
        self.calls.pop(call.seq, None)
        self.sched.parent_done(call.spec.task_id)
        self._ended(call.seq, call.spec)

    def _execute_actor(self, a) -> None:
        t = type(a)
        actor = a.actor
        if t is A.SendCall:
            call = a.call
            spec = call.spec if not call.attempts else call.spec._replace(attempt=call.attempts)
            self.workers[actor.wid].send(P.encode((P.TASK, call.seq, spec)))
        elif t is A.Place:
            self._execute(self.sched.place_actor(actor.actor_id, actor.placing, actor.living, actor.spec.class_name))
        elif t is A.Release:
            self._execute(self.sched.actor_gone(actor.actor_id))
            if actor.state == "dead":
                self.refs.release_task(actor.creation_seq)
        elif t is A.SendInit:
            assigned = shape_amounts(actor.living)  # what it holds while alive
            self.workers[actor.wid].send(P.encode((P.ACTOR_INIT, actor.spec, actor.restarts, assigned)))
        elif t is A.FailCalls:
            for call in a.calls:
                self.put_error(call.spec, a.error)
                self._call_ended(actor, call)
        elif t is A.KillProcess:
            h = self.workers.get(actor.wid)
            if h is not None and h.pid is not None:
                h.signal(signal.SIGKILL)
            elif h is not None:
                h.kill_when_spawned = True
        elif t is A.StopProcess:
            h = self.workers.get(actor.wid)
            if h is not None:
                h.send(P.encode((P.EXIT,)))
