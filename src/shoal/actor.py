"""@remote for classes: actors, their handles and method calls.

``Cls.remote(...)`` starts a process holding the instance and returns an
ActorHandle at once; ``handle.method.remote(...)`` returns ObjectRef(s).
Calls from one caller run in submission order, one at a time (unless the
actor is threaded or async). Handles pickle: every holder calls the same
actor, which ends when the last handle is gone (unless it has a name).
"""

from __future__ import annotations

import abc
from typing import Any

from shoal import exceptions as exc
from shoal import ids, objectref, placement, serialization
from shoal.objectref import ObjectRef, ObjectRefGenerator
from shoal.options import ACTOR_DEFAULTS, env_vars, validate, warn_once
from shoal.remote_function import current_context, store_definition
from shoal.scheduler import protocol as P
from shoal.scheduler.actors import Actor
from shoal.scheduler.state import make_shape
from shoal.worker import arguments
from shoal.worker.actor_info import ActorInfo, class_info
from shoal.worker.execution import ActorExit

#: Ray's default concurrency of async actors.
DEFAULT_ASYNC_CONCURRENCY = 1000


def method(*args: Any, **kwargs: Any) -> Any:
    """Options for one actor method: ``@method(num_returns=2)``."""
    allowed = {"num_returns", "concurrency_group", "max_task_retries", "retry_exceptions",
               "_generator_backpressure_num_objects", "enable_task_events"}

    def deco(fn):
        bad = set(kwargs) - allowed
        if bad:
            raise ValueError(f"invalid option(s) for @method: {sorted(bad)}")
        fn.__shoal_method_options__ = dict(kwargs)
        return fn

    if args and callable(args[0]) and len(args) == 1 and not kwargs:
        return deco(args[0])
    if args:
        raise TypeError("@method takes keyword options only, e.g. @method(num_returns=2)")
    return deco


class ActorClass:
    """A class turned into an actor factory by @remote."""

    def __init__(self, cls: type, options: dict):
        self._cls = cls
        self._options = validate(dict(options), "actor")
        self._info = class_info(cls)
        self._class_ids: dict[str, bytes] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{self._cls.__name__}()', use "
            f"'{self._cls.__name__}.remote()'.")

    def __getattr__(self, name: str) -> Any:
        # The class's own attributes (constants, classmethods, staticmethods)
        # read through the actor class, as in Ray, whose actor class derives
        # from the user's: methods often name their class (Cls.X, Cls.f()).
        cls = self.__dict__.get("_cls")
        if cls is None:
            raise AttributeError(name)
        try:
            return getattr(cls, name)
        except AttributeError:
            raise AttributeError(f"actor class {cls.__name__!r} has no attribute {name!r}") from None

    def __dir__(self) -> list[str]:
        # What the attribute lookup above reaches, for autocompletion (Ray's
        # actor class lists the user's class attributes too).
        return sorted(set(super().__dir__()) | set(dir(self._cls)))

    def __mro_entries__(self, bases: tuple) -> tuple:
        # `class Derived(ActorClassObject)`: say so, rather than fail on arguments.
        raise TypeError(
            f"Inheriting from actor classes is not currently supported: derive from "
            f"{self._cls.__name__}'s plain class instead, and make the derived class an actor "
            f"with @remote.")

    def remote(self, *args: Any, **kwargs: Any) -> "ActorHandle":
        """Start the actor; returns its handle at once."""
        return self._create(args, kwargs, self._options)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A DAG node starting the actor (a new one each execute(), as in
        Ray); ``node.method.bind(...)`` calls it (see shoal.dag)."""
        from shoal.dag import ClassNode

        return ClassNode(self, args, kwargs)

    def options(self, **options: Any) -> "_BoundActorClass":
        validate(options, "actor")
        return _BoundActorClass(self, {**self._options, **options})

    def _class_id(self, ctx) -> bytes:
        cid = self._class_ids.get(ctx.session)
        if cid is None:
            cid = store_definition(ctx, self._cls, f"actor class {self._cls.__module__}.{self._cls.__qualname__}")
            self._class_ids = {ctx.session: cid}
        return cid

    def _create(self, args: tuple, kwargs: dict, options: dict) -> "ActorHandle":
        ctx = current_context()
        ctx.check_open()
        if getattr(ctx, "cluster", False):  # a Ray actor (shoal.cluster)
            return ctx.create_actor(self, options, args, kwargs)
        opts = {**ACTOR_DEFAULTS, **options}
        if getattr(ctx, "local", False):
            return LocalActorHandle(ctx, self._cls(*args, **kwargs), self._info)
        name = opts["name"]
        namespace = opts["namespace"] or getattr(ctx, "namespace", "")
        if name is not None and opts["get_if_exists"]:
            found = ctx.named_actor(name, namespace)
            if found is not None:
                return ActorHandle(found[0], found[1], ctx)
        if opts["lifetime"] not in (None, "non_detached", "detached"):
            raise ValueError(f"lifetime must be None or 'detached', not {opts['lifetime']!r}")
        if opts["lifetime"] == "detached":
            warn_once("actor:detached", "shoal has no cluster to outlive the driver: a detached actor "
                      "outlives its handles but not shutdown()")
        info = self._info
        max_concurrency = opts["max_concurrency"]
        if max_concurrency is None:
            max_concurrency = DEFAULT_ASYNC_CONCURRENCY if info.is_async else 1
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an int >= 1, not {max_concurrency!r}")
        for key in ("max_restarts", "max_task_retries"):
            v = opts[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < -1:
                raise ValueError(f"{key} must be an int >= -1 (-1: forever), not {v!r}")
        arguments.check_call(info.init_params, args, kwargs, f"{info.class_name}.__init__()")
        env = env_vars(opts["runtime_env"], f"the options of actor {info.class_name}") or None
        groups = opts["concurrency_groups"] or None
        for m, mi in info.methods.items():
            if mi.group is not None and mi.group not in (groups or {}):
                raise ValueError(f"method {info.class_name}.{m} is in concurrency group {mi.group!r}, "
                                 f"which concurrency_groups does not define ({sorted(groups or {})})")
        info = info._replace(groups=tuple(sorted(groups or ())))  # handles check calls' groups
        class_id = self._class_id(ctx)
        actor_id = ids.new_task_id()
        a = arguments.prepare(ctx, args, kwargs, f"{info.class_name}.__init__()")
        spec = P.ActorSpec(actor_id, class_id, info.class_name, a.blob, a.args_id, max_concurrency, info.is_async,
                           name, env, groups)
        extra = {"GPU": opts["num_gpus"] or 0, **(opts["resources"] or {})}
        if opts["memory"]:
            extra["memory"] = opts["memory"]
        if opts["num_cpus"] is None:  # as Ray: 1 CPU to place it, none while it lives
            placing, living = make_shape({"CPU": 1, **extra}), make_shape(extra)
        else:
            placing = living = make_shape({"CPU": opts["num_cpus"], **extra})
        where = placement.resolve(options)
        if where is not None or getattr(ctx, "placement", None):
            placing, spec_placement = placement.place(placing, where, ctx)
            living, _ = placement.place(living, where, ctx)
            spec = spec._replace(placement=spec_placement)
        actor = Actor(actor_id, spec, name=name, namespace=namespace, placing=placing, living=living,
                      max_restarts=opts["max_restarts"], max_task_retries=opts["max_task_retries"],
                      max_pending=opts["max_pending_calls"],
                      # As Ray 2.60: only a detached actor outlives its handles; a
                      # named one is collected with its last handle (get_actor makes one).
                      keep=opts["lifetime"] == "detached", info=info)
        handle = ActorHandle(actor_id, info, ctx)
        ctx.create_actor(actor, a.deps, a.held, wait=name is not None)
        return handle

    def __repr__(self) -> str:
        return f"ActorClass({self._cls.__module__}.{self._cls.__name__})"


class _BoundActorClass:
    __slots__ = ("_ac", "_options")

    def __init__(self, ac: ActorClass, options: dict):
        self._ac = ac
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> "ActorHandle":
        return self._ac._create(args, kwargs, self._options)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        from shoal.dag import ClassNode

        return ClassNode(self, args, kwargs)

    def options(self, **options: Any) -> "_BoundActorClass":
        validate(options, "actor")
        return _BoundActorClass(self._ac, {**self._options, **options})


#: num_returns given as words, as the scheduler's protocol numbers them.
_RETURN_KINDS = {"streaming": P.STREAMING, "dynamic": P.DYNAMIC}


class ActorHandle(metaclass=abc.ABCMeta):
    """A handle to an actor: ``handle.method.remote(...)``. Pickles; every
    holder calls the same actor. On a Ray cluster (init(address=...))
    handles are Ray's own, and count as instances of this class too."""

    @classmethod
    def __subclasshook__(cls, other: type):
        if cls is ActorHandle and objectref._is_ray(other, "ActorHandle", "ClientActorHandle"):
            return True
        return NotImplemented

    __slots__ = ("_actor_id", "_info", "_ctx", "_id", "__weakref__")

    def __init__(self, actor_id: bytes, info: ActorInfo, ctx: Any):
        self._actor_id = actor_id
        self._info = info
        self._ctx = ctx
        self._id = ids.actor_handle_id(actor_id)
        if ctx is not None:
            ctx.refs.incref(self._id)

    def __del__(self) -> None:
        ctx = self._ctx
        if ctx is not None:
            ctx.refs.decref(self._id)
            # The last handle may be gone: the driver must act on it even if
            # nothing else happens (an idle actor holds resources).
            ctx.handle_dropped()

    def __getattr__(self, name: str) -> "ActorMethod":
        info = self._info.methods.get(name)
        if info is None:
            raise AttributeError(f"'{self._info.class_name}' actor has no method '{name}'")
        return ActorMethod(self, name, info.num_returns)

    def __dir__(self) -> list[str]:
        # The methods one can call, for autocompletion; Ray's list __init__ too.
        return sorted({"__init__", *self._info.methods})

    def __reduce__(self):
        serialization.record_nested(self)
        return (_rebuild_handle, (self._actor_id, self._info))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __repr__(self) -> str:
        return f"Actor({self._info.class_name}, {self._actor_id.hex()})"

    def _call(self, method_name: str, args: tuple, kwargs: dict, num_returns: int, name: str | None,
              group: str | None = None) -> Any:
        ctx = objectref.current()
        if ctx is None or ctx.closed:
            raise exc.RuntimeClosedError("the runtime this actor belongs to was shut down")
        method = self._info.methods.get(method_name)
        if method is not None:
            arguments.check_call(method.params, args, kwargs, f"{self._info.class_name}.{method_name}()")
        task_id = ids.new_task_id()
        a = arguments.prepare(ctx, args, kwargs, f"{self._info.class_name}.{method_name}()")
        if group is None and method is not None:
            group = method.group
        elif group is not None and self._info.groups is not None and group not in self._info.groups:
            raise ValueError(f"the actor {self._info.class_name} has no concurrency group {group!r} "
                             f"(it has {list(self._info.groups)})")
        spec = P.CallSpec(task_id, method_name, name or f"{self._info.class_name}.{method_name}", a.blob,
                          a.args_id, num_returns, 0, group)
        if num_returns == P.STREAMING:
            result: Any = ObjectRefGenerator(task_id, ctx)
        elif num_returns == 1 or num_returns == P.DYNAMIC:
            result = ObjectRef(ids.return_id(task_id, 0), ctx)
        else:
            result = [ObjectRef(ids.return_id(task_id, i), ctx) for i in range(num_returns)] or None
        try:
            ctx.call_actor(self._actor_id, spec, a.deps, a.held)
        except BaseException:
            if a.args_id is not None:  # stored for this call alone
                ctx.store.delete(a.args_id)
            raise
        return result


def _rebuild_handle(actor_id: bytes, info: ActorInfo) -> ActorHandle:
    return ActorHandle(actor_id, info, objectref.current())


class ActorMethod:
    __slots__ = ("_handle", "_name", "_num_returns", "_task_name", "_group")

    def __init__(self, handle: ActorHandle, name: str, num_returns: int, task_name: str | None = None,
                 group: str | None = None):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._task_name = task_name
        self._group = group

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Call the method in the actor; returns ObjectRef(s) at once."""
        return self._handle._call(self._name, args, kwargs, self._num_returns, self._task_name, self._group)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        """A DAG node calling this method of this (live) actor (see shoal.dag)."""
        from shoal.dag import ClassMethodNode

        return ClassMethodNode(self, self._name, args, kwargs)

    def options(self, num_returns: Any = None, name: str | None = None, concurrency_group: str | None = None,
                **ignored: Any) -> "ActorMethod":
        """This call with other options: num_returns, name, concurrency_group."""
        n = self._num_returns if num_returns is None else _RETURN_KINDS.get(num_returns, num_returns)
        return ActorMethod(self._handle, self._name, n, name or self._task_name, concurrency_group or self._group)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actor methods cannot be called directly. Instead of running 'object.{self._name}()', "
            f"try 'object.{self._name}.remote()'.")


class LocalActorHandle:
    """An actor in local mode: an instance in this process."""

    def __init__(self, ctx: Any, instance: Any, info: ActorInfo):
        self._ctx = ctx
        self._instance = instance
        self._info = info

    def __getattr__(self, name: str) -> Any:
        info = self._info.methods.get(name)
        if info is None:
            raise AttributeError(f"'{self._info.class_name}' actor has no method '{name}'")
        ctx, inst = self._ctx, self._instance

        class _M:
            def remote(_self, *args, **kwargs):
                fn = getattr(inst, name) if name != "__ray_terminate__" else (lambda: None)
                if info.is_async:
                    import asyncio

                    coro_fn = fn
                    fn = lambda *a, **k: asyncio.run(coro_fn(*a, **k))  # noqa: E731
                return ctx.run_task(fn, f"{self._info.class_name}.{name}", args, kwargs, info.num_returns)

        return _M()


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the actor named `name` (in `namespace`, default: this
    job's). Raises ValueError if there is none."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an actor name must be a non-empty str, not {name!r}")
    ctx = current_context()
    if getattr(ctx, "cluster", False):
        return ctx.get_actor(name, namespace)
    found = ctx.named_actor(name, namespace or getattr(ctx, "namespace", ""))
    if found is None:
        raise ValueError(
            f"Failed to look up actor with name '{name}'. This could because 1. You are trying to "
            f"look up a named actor you didn't create. 2. The named actor died. 3. You did not use "
            f"a namespace matching the namespace of the actor.")
    return ActorHandle(found[0], found[1], ctx)


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill the actor's process now; its pending calls fail with
    ActorDiedError. With no_restart=False it restarts if it has restarts
    left."""
    if not isinstance(actor, ActorHandle):
        raise ValueError(f"kill() expects an actor handle, not {type(actor).__name__}")
    ctx = current_context()
    if getattr(ctx, "cluster", False):
        return ctx.kill(actor, no_restart)
    ctx.kill_actor(actor._actor_id, no_restart)


def _inside_ray() -> bool:
    from shoal.cluster import inside_ray

    return inside_ray()


def exit_actor() -> None:
    """Inside an actor method: finish this call and exit the actor."""
    ctx = objectref.current()
    if getattr(ctx, "cluster", False) or (ctx is None and _inside_ray()):
        import ray

        ray.actor.exit_actor()
    if ctx is None or not hasattr(ctx, "wid"):
        raise TypeError("exit_actor() can only be called inside an actor")
    raise ActorExit()
