"""Task arguments: encoded by the submitting process, decoded by the worker.

Ray's rule: ObjectRefs at the top level of the arguments (positional or
keyword) are replaced by their values before the task runs; refs nested in
lists, dicts or objects arrive as refs. Top-level refs travel as TopRef
markers (no reference counting on the way: the task holds them), nested
ones as ObjectRefs (the worker then holds them too).
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

from shoal import serialization
from shoal.objectref import ObjectRef, _stale_error
from shoal.words import a_type


# Checking a call against the signature at submission, as Ray does: a wrong
# call raises TypeError from .remote() instead of failing later in the worker.
# A signature travels as `params`, a small picklable tuple of (name, kind,
# has_default), so that actor handles carry their methods' signatures.

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_checks: dict[tuple, tuple] = {}  # params -> (min positional, max positional, Signature)


def describe_params(fn: Any, skip_first: bool = False) -> tuple | None:
    """`fn`'s parameters as (name, kind, has_default) tuples (skip_first: a
    method's self); None when they cannot be inspected (a builtin...)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if skip_first:
        if not params or params[0].kind not in _POSITIONAL:
            return None
        params = params[1:]
    return tuple((p.name, int(p.kind), p.default is not inspect.Parameter.empty) for p in params)


def check_call(params: tuple | None, args: tuple, kwargs: dict, what: str) -> None:
    """Raise TypeError if (args, kwargs) cannot bind to `params` (None: no check)."""
    if params is None:
        return
    check = _checks.get(params)
    if check is None:
        check = _checks[params] = _compile(params)
    low, high, sig = check
    if not kwargs and low <= len(args) <= high:
        return  # the common case, without building a binding (~1.5 us)
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{what}: {e}") from None


def _compile(params: tuple) -> tuple:
    sig = inspect.Signature([
        inspect.Parameter(name, inspect._ParameterKind(kind),
                          default=None if has_default else inspect.Parameter.empty)
        for name, kind, has_default in params])
    kinds = [(inspect._ParameterKind(kind), has_default) for _, kind, has_default in params]
    if any(k == inspect.Parameter.KEYWORD_ONLY and not d for k, d in kinds):
        return (1, 0, sig)  # a required keyword: always bind
    positional = [d for k, d in kinds if k in _POSITIONAL]
    low = sum(1 for d in positional if not d)
    high = float("inf") if any(k == inspect.Parameter.VAR_POSITIONAL for k, _ in kinds) else len(positional)
    return (low, high, sig)


class TopRef:
    """A top-level argument that is a ref: resolved to its value."""

    __slots__ = ("oid",)

    def __init__(self, oid: bytes):
        self.oid = oid

    def __reduce__(self):
        return (TopRef, (self.oid,))


class EncodedArgs(NamedTuple):
    blob: bytes | None  #: the serialized (args, kwargs), when small
    large: Any  #: a Serialized to put in the store instead, when large
    deps: list  #: object IDs of top-level refs (must be sealed first)
    held: list  #: every object ID the task keeps alive (deps and nested)


def encode(args: tuple, kwargs: dict, inline_limit: int, what: str = "the call") -> EncodedArgs:
    """Encode the arguments of `what` (e.g. "f()"); large ones are returned
    for the store. Raises SerializationError naming the argument that does
    not pickle."""
    if not args and not kwargs:
        return EncodedArgs(None, None, [], [])
    deps: list = []
    if any(type(a) is ObjectRef for a in args):
        args = tuple(_top(a, deps) for a in args)
    if kwargs and any(type(v) is ObjectRef for v in kwargs.values()):
        kwargs = {k: _top(v, deps) for k, v in kwargs.items()}
    try:
        s = serialization.serialize((args, kwargs))
    except serialization.SerializationError as e:
        raise _unserializable(args, kwargs, what, e) from e.__cause__
    held = deps + [r._id for r in s.nested if hasattr(r, "_id")]  # refs and actor handles
    if s.size <= inline_limit:
        if len(s.parts) == 1:
            return EncodedArgs(bytes(s.parts[0][1]), None, deps, held)
        return EncodedArgs(serialization.dumps((args, kwargs)), None, deps, held)
    return EncodedArgs(None, s, deps, held)


def _unserializable(args: tuple, kwargs: dict, what: str, error: Exception) -> Exception:
    """The error for arguments that do not pickle, naming the first
    argument that does not on its own (the message about the argument
    tuple, if each pickles alone)."""
    for key, value in (*enumerate(args), *kwargs.items()):
        try:
            serialization.serialize(value)
        except serialization.SerializationError as e:
            which = f"argument {key}" if isinstance(key, int) else f"keyword argument {key!r}"
            return serialization.SerializationError(
                f"{which} of {what}, {a_type(value)}, cannot be serialized: {e.__cause__ or e}. "
                f"{serialization.UNPICKLABLE_HINT}")
    return error


def _top(value: Any, deps: list) -> Any:
    if type(value) is ObjectRef:
        owner = value._ctx
        if owner is not None and owner.closed:  # its object is gone: the task would wait forever
            raise _stale_error(value)
        deps.append(value._id)
        return TopRef(value._id)
    return value


def decode(data: Any, get_values, what: Any = None) -> tuple[tuple, dict]:
    """(args, kwargs) from encoded bytes or a store buffer; `get_values`
    maps a list of ObjectRefs to their values (raising a dependency's
    error). what: names the arguments for ObjectDeserializationError."""
    args, kwargs = serialization.deserialize(data, what=what)
    tops = [a for a in args if type(a) is TopRef] + [v for v in kwargs.values() if type(v) is TopRef]
    if not tops:
        return args, kwargs
    values = dict(zip((t.oid for t in tops), get_values([ObjectRef(t.oid) for t in tops])))
    args = tuple(values[a.oid] if type(a) is TopRef else a for a in args)
    kwargs = {k: values[v.oid] if type(v) is TopRef else v for k, v in kwargs.items()}
    return args, kwargs


class Prepared(NamedTuple):
    """Arguments ready to submit: inline bytes or a stored object's ID, the
    refs the call depends on, and every object it keeps alive."""

    blob: bytes | None
    args_id: bytes | None
    deps: list
    held: list


def prepare(ctx: Any, args: tuple, kwargs: dict, what: str = "the call") -> Prepared:
    """Encode the arguments of `what` (e.g. "f()") for `ctx`, storing them
    when large."""
    from shoal import ids

    enc = encode(args, kwargs, ctx.inline_limit, what)
    if enc.large is None:
        return Prepared(enc.blob, None, enc.deps, enc.held)
    args_id = ids.new_put_id()
    ctx.store.put_serialized(args_id, enc.large)
    return Prepared(None, args_id, enc.deps, enc.held + [args_id])
