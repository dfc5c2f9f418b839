"""Progress bars from tasks and actors, drawn by the driver as one display
(Ray's ray.experimental.tqdm_ray).

A bar in a task or actor sends its state (at most every flush_interval_s
seconds, and when it closes) as one marked line on the process's stdout;
the driver, which reads that pipe anyway, draws every bar with tqdm at its
own position and prints the tasks' other output above the bars instead of
through them. In the driver a bar is drawn directly.

    @shoal.remote
    def work(n):
        for _ in tqdm(range(n), desc="work"):
            ...
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from typing import Any, Iterable, Iterator

from shoal import objectref

#: Starts the stdout line that carries a bar's state (never shown).
MARKER = b"\x00shoal-progress:"

__all__ = ["tqdm", "safe_print"]


class tqdm:
    """A progress bar usable in tasks and actors (a subset of tqdm's API).

    Args:
        iterable: what to iterate over (total defaults to its len()).
        desc: the bar's label.
        total: the count at which it is complete (None: unknown).
        unit: what is counted ("it").
        position: the bar's line, among this process's bars.
        flush_interval_s: the least time between two updates sent to the
            driver (seconds; default 1.0).
    """

    DEFAULT_FLUSH_INTERVAL_SECONDS = 1.0

    def __init__(self, iterable: Iterable | None = None, desc: str | None = None, total: int | None = None,
                 unit: str | None = None, position: int | None = None, flush_interval_s: float | None = None):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self._iterable = iterable
        self._desc = desc or ""
        self._total = total
        self._unit = unit or "it"
        self._pos = position or 0
        self._x = 0
        self._closed = False
        self._uuid = uuid.uuid4().hex
        self._flush_interval_s = self.DEFAULT_FLUSH_INTERVAL_SECONDS if flush_interval_s is None \
            else flush_interval_s
        self._last_flush = 0.0

    def update(self, n: int = 1) -> None:
        self._x += n
        self._send()

    def set_description(self, desc: str) -> None:
        self._desc = desc
        self._send()

    def refresh(self) -> None:
        self._send(force=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._send(force=True)

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, total: int) -> None:
        self._total = total

    @property
    def n(self) -> int:
        return self._x

    @n.setter
    def n(self, n: int) -> None:
        self._x = n

    def __iter__(self) -> Iterator:
        if self._iterable is None:
            raise ValueError("this bar has no iterable: call update() instead")
        for item in self._iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "tqdm":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _state(self) -> dict:
        return {"uuid": self._uuid, "pid": os.getpid(), "x": self._x, "total": self._total, "desc": self._desc,
                "unit": self._unit, "pos": self._pos, "closed": self._closed}

    def _send(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < self._flush_interval_s:
            return
        self._last_flush = now
        ctx = objectref.current()
        if ctx is not None and not hasattr(ctx, "shell"):  # a worker: to the driver, through stdout
            sys.stdout.flush()  # what it printed before comes first
            os.write(1, MARKER + json.dumps(self._state()).encode() + b"\n")
        else:
            manager().update(self._state())


def safe_print(*args: Any, **kwargs: Any) -> None:
    """print(), above the bars instead of through them."""
    manager().write(" ".join(map(str, args)), kwargs.get("file"))


class _Bars:
    """The driver's bars: one tqdm bar per bar of any process, each on its
    own line; output printed while bars show goes above them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bars: dict[str, Any] = {}  # uuid -> tqdm bar
        self._lines: dict[str, int] = {}  # uuid -> its line

    def update(self, state: dict) -> None:
        with self._lock:
            bar = self._bars.get(state["uuid"])
            if bar is None:
                if state["closed"] and state["x"] == 0:
                    return
                from tqdm.auto import tqdm as real

                line = min(set(range(len(self._lines) + 1)) - set(self._lines.values()))
                bar = real(desc=state["desc"], total=state["total"], unit=state["unit"], position=line,
                           dynamic_ncols=True, leave=True)
                self._bars[state["uuid"]] = bar
                self._lines[state["uuid"]] = line
            bar.set_description(state["desc"], refresh=False)
            bar.total = state["total"]
            bar.n = state["x"]
            bar.refresh()
            if state["closed"]:
                bar.close()
                del self._bars[state["uuid"]]
                del self._lines[state["uuid"]]

    def line(self, data: bytes) -> None:
        """A marked line from a worker's stdout (the runtime's output hook)."""
        try:
            state = json.loads(data[len(MARKER):])
        except ValueError:
            return  # cut or garbled: the next update carries the whole state again
        self.update(state)

    def write(self, text: str, file=None) -> None:
        """Print text above the bars (directly when there are none)."""
        out = file or sys.stdout
        with self._lock:
            active = bool(self._bars)
        if active:
            from tqdm.auto import tqdm as real

            real.write(text, file=out)
        else:
            out.write(text + "\n")
            out.flush()

    def active(self) -> bool:
        return bool(self._bars)


_manager: _Bars | None = None
_manager_lock = threading.Lock()


def manager() -> _Bars:
    """The driver's bars (made on first use)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = _Bars()
        return _manager
