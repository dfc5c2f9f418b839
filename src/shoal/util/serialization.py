"""Custom serializers and a serializability report, with Ray's names
(ray.util.register_serializer, deregister_serializer,
inspect_serializability)."""

from __future__ import annotations

import inspect
import sys
from typing import Any, NamedTuple, TextIO

from shoal.serialization import SerializationError, deregister_serializer, register_serializer, serialize

__all__ = ["register_serializer", "deregister_serializer", "inspect_serializability", "FailureTuple"]


class FailureTuple(NamedTuple):
    """A value that cannot be serialized, where it was found (hashed by
    identity: the values themselves need not be hashable)."""

    obj: Any
    name: str
    parent: Any

    def __hash__(self) -> int:
        return hash((id(self.obj), self.name, id(self.parent)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FailureTuple) and (self.obj is other.obj and self.name == other.name
                                                     and self.parent is other.parent)


def _serializes(obj: Any) -> bool:
    try:
        serialize(obj)
    except SerializationError:
        return False
    except Exception:  # a reducer that raised something else: not serializable either
        return False
    return True


def _members(obj: Any) -> list[tuple[str, Any]]:
    """What obj holds that serializing it would serialize too."""
    if inspect.isfunction(obj):
        members = list(inspect.getclosurevars(obj).nonlocals.items())
        members += list(inspect.getclosurevars(obj).globals.items())
        return members
    if isinstance(obj, dict):
        return [(repr(k), v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict) and not inspect.isclass(obj) and not inspect.ismodule(obj):
        return list(state.items())
    return []


def inspect_serializability(base_obj: Any, name: str | None = None, depth: int = 3,
                            print_file: TextIO | None = None) -> tuple[bool, set]:
    """Whether `base_obj` can be sent to another process, and if not, the
    innermost values (up to `depth` levels into closures, attributes and
    containers) that cannot: (ok, {FailureTuple, ...}). Prints a short
    report to `print_file` (None: stdout), as Ray's does."""
    out = print_file or sys.stdout
    label = name or getattr(base_obj, "__qualname__", None) or type(base_obj).__name__
    if _serializes(base_obj):
        print(f"{label} is serializable.", file=out)
        return True, set()
    failures: set = set()

    def walk(obj: Any, obj_name: str, parent: Any, level: int) -> None:
        culprits = [(n, v) for n, v in _members(obj) if not _serializes(v)] if level < depth else []
        if not culprits:
            failures.add(FailureTuple(obj, obj_name, parent))
            return
        for n, v in culprits:
            walk(v, n, obj, level + 1)

    walk(base_obj, label, None, 0)
    print(f"{label} cannot be serialized. The values that cannot:", file=out)
    for f in sorted(failures, key=lambda f: f.name):
        print(f"  {f.name}: {type(f.obj).__qualname__} {f.obj!r:.80}", file=out)
    return False, failures
