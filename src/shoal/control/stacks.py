"""Python stacks of every process of a runtime (`shoal stack`), as `ray
stack` shows with py-spy, without needing ptrace rights: each worker prints
its threads' stacks to stderr when sent SIGUSR2 (faulthandler, which works
even while the worker runs native code), and the driver collects those
lines instead of forwarding them. The driver's own threads are read in place.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback

from shoal.scheduler import introspect

#: A dump is complete when no line came for this long (seconds).
QUIET_S = 0.25

#: The longest wait for every process's dump (seconds).
DUMP_TIMEOUT_S = 3.0


def driver_stacks() -> str:
    """Every thread of this process, most recent call last."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"Thread {names.get(ident, ident)!s} ({ident:#x}):\n"
                     + "".join(traceback.format_stack(frame)))
    return "\n".join(parts)


def all_stacks(shell, timeout: float = DUMP_TIMEOUT_S) -> list[dict]:
    """[{"process", "pid", "stack"}] for the driver and each worker and
    actor process that has started (faulthandler's text: most recent call first)."""
    out = [{"process": f"driver (pid {os.getpid()})", "pid": os.getpid(), "stack": driver_stacks()}]
    output = shell.output
    with shell.lock:
        names = introspect.process_names(shell, os.getpid())
        targets = {wid: h for wid, h in shell.workers.items() if h.ready and h.pid is not None}
        captures = output.capture(list(targets))
        try:
            for wid in captures:
                targets[wid].signal(signal.SIGUSR2)
            deadline = time.monotonic() + timeout
            seen = -1
            while True:
                count = sum(len(c) for c in captures.values())
                left = deadline - time.monotonic()
                if left <= 0 or (count == seen and all(captures.values())):
                    break  # every process wrote, and nothing more came for QUIET_S
                seen = count
                output.arrived.wait(min(QUIET_S, left))  # (the I/O thread reads the pipes meanwhile)
        finally:
            output.end_capture()
        for wid, lines in captures.items():
            h = targets[wid]
            text = "\n".join(lines).strip("\n")
            out.append({"process": names.get(wid, f"worker (pid {h.pid})"), "pid": h.pid,
                        "stack": text or f"(no answer within {timeout} s)"})
    return out
