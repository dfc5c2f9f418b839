"""Words for messages: type names with their article, and sizes
(standard library only, importable from anywhere)."""

from __future__ import annotations


def type_name(cls: type) -> str:
    """`int` for builtins, `module.Qualified` for the rest (`_thread.lock`)."""
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", None) or getattr(cls, "__name__", repr(cls))
    return name if module in (None, "builtins") else f"{module}.{name}"


def a_type(value: object) -> str:
    """The type of `value` with its article: "an int", "a _thread.lock"."""
    name = type_name(type(value))
    return f"{'an' if name[:1].lower() in 'aeio' else 'a'} {name}"


def size(n: float) -> str:
    """A byte count for people: '512 bytes', '1.50 MiB', '17.00 GiB'."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:g} bytes"
