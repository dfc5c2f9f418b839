"""Actors as the scheduler sees them (pure: events in, actions out).

    placing --(resources held)--> starting --(process READY)--> constructing
       ^                                                            | __init__ ok / raised
       |  restart (max_restarts)                                    v
    restarting <--(process died)-- alive --(killed, terminated, out of restarts)--> dead

Calls from every caller go through the driver. As in Ray, calls from one
caller (a process) run in the order it submitted them, and a call whose
arguments are not ready yet waits in `held` (with the calls of the same
caller after it) without holding up other callers' calls. Admitted calls
wait in `queue` until the actor is alive, then travel to its process and
wait in `inflight` until it reports them done. When the process dies, in-flight calls are retried on the restarted
actor (up to max_task_retries) or fail with ActorDiedError, as do all later
calls once the actor is dead.
"""

from __future__ import annotations

import collections
from typing import Any, NamedTuple

from shoal import exceptions as exc


class Call:
    __slots__ = ("seq", "spec", "attempts", "submitted", "missing")

    def __init__(self, seq: int, spec: Any):
        self.seq = seq
        self.spec = spec
        self.attempts = 0
        self.submitted = 0.0  # when it was made (the shell's clock; for task events)
        self.missing: set[bytes] = set()  # arguments not sealed yet


class Actor:
    __slots__ = (
        "actor_id", "spec", "name", "namespace", "placing", "living", "max_restarts",
        "max_task_retries", "max_pending", "restarts", "state", "wid", "queue", "inflight",
        "cause", "no_restart", "keep", "stopping", "creation_seq", "info", "held", "stop_when_released",
        "unreferenced",
    )

    def __init__(self, actor_id: bytes, spec: Any, *, name: str | None = None, namespace: str = "",
                 placing: tuple = (), living: tuple = (), max_restarts: int = 0,
                 max_task_retries: int = 0, max_pending: int = -1, keep: bool = False, creation_seq: int = 0,
                 info: Any = None):
        self.actor_id = actor_id
        self.spec = spec
        self.name = name
        self.namespace = namespace
        self.placing = placing
        self.living = living
        self.max_restarts = max_restarts
        self.max_task_retries = max_task_retries
        self.max_pending = max_pending
        self.restarts = 0
        self.state = "placing"
        self.wid: int | None = None
        self.queue: collections.deque[Call] = collections.deque()
        self.inflight: dict[int, Call] = {}  # insertion order = send order
        # Calls held back, by caller: the first waits for its arguments, the
        # others for it (one caller's calls keep their order).
        self.held: dict[Any, collections.deque[Call]] = {}
        self.stop_when_released = False  # stop the process once nothing is held
        self.cause: BaseException | None = None
        self.no_restart = False
        self.keep = keep  # named or detached: lives without handles
        self.stopping = False  # stop once the calls sent so far are done
        self.creation_seq = creation_seq
        self.info = info  # what a handle needs (class name, methods): opaque here
        self.unreferenced = False  # its last handle is gone: once dead, it is retired

    def describe(self) -> str:
        return f"{self.spec.class_name}" + (f" (name {self.name!r})" if self.name else "") + \
            f" [{self.actor_id.hex()}]"


# Actions ---------------------------------------------------------------------


class Place(NamedTuple):
    """Ask the resource scheduler to place the actor."""

    actor: Actor


class Release(NamedTuple):
    """The actor no longer holds resources."""

    actor: Actor


class SendInit(NamedTuple):
    actor: Actor


class SendCall(NamedTuple):
    actor: Actor
    call: Call


class FailCalls(NamedTuple):
    """Seal `error` as the result of each call."""

    actor: Actor
    calls: list
    error: BaseException


class KillProcess(NamedTuple):
    actor: Actor


class StopProcess(NamedTuple):
    """Ask the process to exit once the calls sent before are done."""

    actor: Actor


#: Dead actors that no handle refers to, kept for the state API (list_actors
#: shows them DEAD, as Ray's GCS keeps destroyed actors, up to a bound).
DEAD_ACTORS_KEPT = 1000


class ActorTable:
    def __init__(self) -> None:
        self.actors: dict[bytes, Actor] = {}  # every actor that lives or that a handle may still name
        self.retired: collections.deque[Actor] = collections.deque(maxlen=DEAD_ACTORS_KEPT)
        self.names: dict[tuple[str, str], bytes] = {}
        self.by_wid: dict[int, Actor] = {}
        self.waiting_on: dict[bytes, list[tuple[Actor, Call]]] = {}  # object -> held calls needing it

    # -- lookups ---------------------------------------------------------------

    def named(self, name: str, namespace: str) -> Actor | None:
        aid = self.names.get((namespace, name))
        return self.actors.get(aid) if aid else None

    def list_named(self, namespace: str | None) -> list[dict]:
        return [{"name": n, "namespace": ns} for (ns, n) in self.names if namespace is None or ns == namespace]

    # -- events ------------------------------------------------------------------

    def create(self, actor: Actor) -> list:
        if actor.name is not None:
            key = (actor.namespace, actor.name)
            if key in self.names:
                raise exc.ActorAlreadyExistsError(
                    f"The name {actor.name!r} (namespace={actor.namespace!r}) is already taken by "
                    f"another actor; use get_actor(), or options(get_if_exists=True)")
            self.names[key] = actor.actor_id
        self.actors[actor.actor_id] = actor
        return [Place(actor)]

    def placed(self, actor: Actor, wid: int) -> None:
        actor.state = "starting"
        actor.wid = wid
        self.by_wid[wid] = actor

    def process_ready(self, actor: Actor) -> list:
        if actor.state != "starting":
            return []
        actor.state = "constructing"
        return [SendInit(actor)]

    def constructed(self, actor: Actor, error: BaseException | None) -> list:
        if actor.state != "constructing":
            return []
        if error is not None:
            actor.no_restart = True  # a constructor that raised would raise again
            return self._dead(actor, exc.ActorDiedError(
                f"The actor {actor.describe()} died because of an error raised in its creation "
                f"task, {actor.spec.class_name}.__init__():\n{error}", actor.actor_id.hex()))
        actor.state = "alive"
        actions: list = []
        while actor.queue:
            call = actor.queue.popleft()
            actor.inflight[call.seq] = call
            actions.append(SendCall(actor, call))
        if actor.stopping:
            actions.extend(self._stop(actor))
        return actions

    def _stop(self, actor: Actor) -> list:
        """Stop the process once the calls submitted so far are done: held
        calls are among them, so with any held it waits for their release."""
        if actor.held:
            actor.stop_when_released = True
            return []
        return [StopProcess(actor)]

    def pending_limit_error(self, actor: Actor) -> exc.PendingCallsLimitExceeded | None:
        """The error for one call too many (max_pending_calls), or None."""
        held = sum(len(line) for line in actor.held.values())
        if actor.max_pending >= 0 and actor.state != "dead" and \
                len(actor.queue) + len(actor.inflight) + held >= actor.max_pending:
            return exc.PendingCallsLimitExceeded(
                f"the actor {actor.describe()} already has {actor.max_pending} pending calls "
                f"(max_pending_calls); wait for some to finish")
        return None

    def call(self, actor: Actor, call: Call, caller: Any = 0, unsealed: tuple | list = ()) -> list:
        """A call from `caller` (the process that made it) whose arguments
        `unsealed` are not sealed yet."""
        if actor.state == "dead":
            return [FailCalls(actor, [call], actor.cause)]
        full = self.pending_limit_error(actor)
        if full is not None:
            return [FailCalls(actor, [call], full)]
        if unsealed or caller in actor.held:
            call.missing = set(unsealed)
            for oid in call.missing:
                self.waiting_on.setdefault(oid, []).append((actor, call))
            actor.held.setdefault(caller, collections.deque()).append(call)
            return []
        return self._admit(actor, call)

    def _admit(self, actor: Actor, call: Call) -> list:
        if call.spec.method == "__ray_terminate__":
            actor.stopping = True
        if actor.state == "alive":
            actor.inflight[call.seq] = call
            return [SendCall(actor, call)]
        actor.queue.append(call)
        return []

    def object_sealed(self, object_id: bytes) -> list:
        """An object held calls may wait for is sealed: admit, per caller,
        the calls at the head of its line whose arguments are all ready."""
        entries = self.waiting_on.pop(object_id, None)
        if not entries:
            return []
        for _, call in entries:
            call.missing.discard(object_id)
        actions: list = []
        for actor in dict.fromkeys(a for a, _ in entries):
            actions.extend(self.release_held(actor))
        return actions

    def release_held(self, actor: Actor) -> list:
        """Admit the held calls that may go now (after a seal or a cancel)."""
        actions: list = []
        for caller in list(actor.held):
            line = actor.held[caller]
            while line and not line[0].missing:
                call = line.popleft()
                if actor.state == "dead":  # (it died while the call was held)
                    actions.append(FailCalls(actor, [call], actor.cause))
                else:
                    actions.extend(self._admit(actor, call))
            if not line:
                del actor.held[caller]
        if actor.stop_when_released and not actor.held and actor.state == "alive":
            actor.stop_when_released = False
            actions.append(StopProcess(actor))
        return actions

    def call_done(self, actor: Actor, seq: int) -> Call | None:
        return actor.inflight.pop(seq, None)

    def cancel_queued(self, actor: Actor, seq: int) -> Call | None:
        """Remove a call not sent yet (None if it was sent). Calls held
        behind it may go then: call release_held(actor)."""
        for call in actor.queue:
            if call.seq == seq:
                actor.queue.remove(call)
                return call
        for caller, line in actor.held.items():
            for call in line:
                if call.seq == seq:
                    line.remove(call)
                    call.missing.clear()  # (its entries in waiting_on are skipped)
                    if not line:
                        del actor.held[caller]
                    return call
        return None

    def process_died(self, actor: Actor, how: str, report: str = "") -> list:
        """The actor's process ended; `how` says why, in words, and
        `report` quotes its fault report if it crashed."""
        self.by_wid.pop(actor.wid, None)
        if actor.state == "dead":
            return [Release(actor)]
        wanted = actor.stopping or actor.no_restart
        restartable = actor.max_restarts < 0 or actor.restarts < actor.max_restarts
        if wanted or not restartable:
            if actor.cause is None:
                if actor.stopping:
                    msg = f"The actor {actor.describe()} exited: it was asked to terminate"
                elif actor.no_restart:
                    msg = f"The actor {actor.describe()} was killed by kill()"
                else:
                    msg = (f"The actor {actor.describe()} died unexpectedly: {how}"
                           + (f"; it was restarted {actor.restarts} time(s) (max_restarts="
                              f"{actor.max_restarts})" if actor.max_restarts else "")
                           + (f". {report}" if report else ""))
                actor.cause = exc.ActorDiedError(msg, actor.actor_id.hex())
            return self._dead(actor, actor.cause)
        # Restart: calls in flight are retried if allowed, else they fail.
        actor.restarts += 1
        actor.state = "placing"
        actor.wid = None
        retry, fail = [], []
        for call in actor.inflight.values():
            call.attempts += 1
            limit = actor.max_task_retries
            (retry if limit < 0 or call.attempts <= limit else fail).append(call)
        actor.inflight.clear()
        actor.queue.extendleft(reversed(retry))
        actions: list = [Release(actor), Place(actor)]
        if fail:  # as Ray: the actor is unavailable for these, not dead
            actions.append(FailCalls(actor, fail, exc.ActorUnavailableError(
                f"The actor {actor.describe()} died while running this call ({how}); it is being "
                f"restarted, but the call is not retried (max_task_retries={actor.max_task_retries})",
                actor.actor_id.hex())))
        return actions

    def kill(self, actor: Actor, no_restart: bool) -> list:
        if actor.state == "dead":
            return []
        actor.no_restart = actor.no_restart or no_restart
        if actor.state in ("placing",):  # no process yet
            if no_restart:
                actor.cause = exc.ActorDiedError(f"The actor {actor.describe()} was killed by kill()",
                                                 actor.actor_id.hex())
                return self._dead(actor, actor.cause)
            return []
        return [KillProcess(actor)]

    def exiting(self, actor: Actor) -> None:
        """The actor ran exit_actor() (or __ray_terminate__): its process
        exits on purpose and is not restarted."""
        actor.no_restart = True
        if actor.cause is None:
            actor.cause = exc.ActorDiedError(
                f"The actor {actor.describe()} exited on request (exit_actor() or __ray_terminate__)",
                actor.actor_id.hex())

    def handles_gone(self, actor: Actor) -> list:
        """No handle to the actor exists any more: stop it (unless named)
        once the calls submitted so far are done. Once dead, it is retired."""
        actor.unreferenced = True
        if actor.state == "dead":
            self._retire(actor)
            return []
        if actor.keep:
            return []
        actor.stopping = True
        self._unname(actor)  # nobody can hold a handle to it now: the name is free
        if actor.state == "placing" and not actor.queue and not actor.held:
            actor.cause = exc.ActorDiedError(f"The actor {actor.describe()} was never used", actor.actor_id.hex())
            return self._dead(actor, actor.cause)
        if actor.state == "alive":
            return self._stop(actor)
        return []  # stopped as soon as it is built

    def _retire(self, actor: Actor) -> None:
        """A dead actor that nothing can name any more leaves the table
        (the last DEAD_ACTORS_KEPT stay listed), so that creating and
        killing actors all day takes no memory."""
        if self.actors.pop(actor.actor_id, None) is not None:
            self.retired.append(actor)

    def _unname(self, actor: Actor) -> None:
        if actor.name is not None and self.names.get((actor.namespace, actor.name)) == actor.actor_id:
            del self.names[(actor.namespace, actor.name)]

    def _dead(self, actor: Actor, cause: BaseException) -> list:
        actor.state = "dead"
        actor.cause = cause
        calls = list(actor.inflight.values()) + list(actor.queue)
        for line in actor.held.values():
            calls.extend(line)
        actor.inflight.clear()
        actor.queue.clear()
        actor.held.clear()  # (their entries in waiting_on find nothing to release)
        self._unname(actor)
        actions: list = [Release(actor)]
        if calls:
            actions.append(FailCalls(actor, calls, cause))
        if actor.unreferenced:
            self._retire(actor)
        return actions
