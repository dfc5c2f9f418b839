"""Task arguments: encoded by the submitting process, decoded by the worker.

Ray's rule: ObjectRefs at the top level of the arguments (positional or
keyword) are replaced by their values before the task runs; refs nested in
lists, dicts or objects arrive as refs. Top-level refs travel as TopRef
markers (no reference counting on the way: the task holds them), nested
ones as ObjectRefs (the worker then holds them too).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from shoal import serialization
from shoal.objectref import ObjectRef, _stale_error


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


def encode(args: tuple, kwargs: dict, inline_limit: int) -> EncodedArgs:
    """Encode a call's arguments; large ones are returned for the store."""
    if not args and not kwargs:
        return EncodedArgs(None, None, [], [])
    deps: list = []
    if any(type(a) is ObjectRef for a in args):
        args = tuple(_top(a, deps) for a in args)
    if kwargs and any(type(v) is ObjectRef for v in kwargs.values()):
        kwargs = {k: _top(v, deps) for k, v in kwargs.items()}
    s = serialization.serialize((args, kwargs))
    held = deps + [r._id for r in s.nested if hasattr(r, "_id")]  # refs and actor handles
    if s.size <= inline_limit:
        if len(s.parts) == 1:
            return EncodedArgs(bytes(s.parts[0][1]), None, deps, held)
        return EncodedArgs(serialization.dumps((args, kwargs)), None, deps, held)
    return EncodedArgs(None, s, deps, held)


def _top(value: Any, deps: list) -> Any:
    if type(value) is ObjectRef:
        owner = value._ctx
        if owner is not None and owner.closed:  # its object is gone: the task would wait forever
            raise _stale_error(value)
        deps.append(value._id)
        return TopRef(value._id)
    return value


def decode(data: Any, get_values) -> tuple[tuple, dict]:
    """(args, kwargs) from encoded bytes or a store buffer; `get_values`
    maps a list of ObjectRefs to their values (raising a dependency's
    error)."""
    args, kwargs = serialization.deserialize(data)
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


def prepare(ctx: Any, args: tuple, kwargs: dict) -> Prepared:
    """Encode a call's arguments for `ctx`, storing them when large."""
    from shoal import ids

    enc = encode(args, kwargs, ctx.inline_limit)
    if enc.large is None:
        return Prepared(enc.blob, None, enc.deps, enc.held)
    args_id = ids.new_put_id()
    ctx.store.put_serialized(args_id, enc.large)
    return Prepared(None, args_id, enc.deps, enc.held + [args_id])
