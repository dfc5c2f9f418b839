"""Words for messages: type names with their article, sizes, and warnings
that point at the user's line (standard library only, importable from
anywhere)."""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


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


def warn(text: str, category: type[Warning] = UserWarning) -> None:
    """warnings.warn, attributed to the first caller outside shoal (the
    user's line, not the internal one that noticed)."""
    frame, level = sys._getframe(), 1  # level 1: this function
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(text, category, stacklevel=level)
