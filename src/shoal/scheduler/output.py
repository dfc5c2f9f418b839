"""What workers print, forwarded to the driver's stdout and stderr with a
prefix naming the task and the process, as Ray does: ``(f pid=1234) text``.

Workers write a marker line ("\\0shoal:<name>") to both streams whenever the
task they run changes name; since it travels in the same pipe as the text,
every line is attributed to the task that printed it, including output of
native code that bypasses Python's sys.stdout.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
from typing import Any, Callable

MARKER = b"\x00shoal:"
#: Starts a line carrying a progress bar's state (shoal.experimental.tqdm_ray).
PROGRESS = b"\x00shoal-progress:"

#: Lines of each worker's stderr kept for error messages: enough for a
#: fault report (faulthandler prints up to 100 frames per thread).
TAIL_LINES = 300

#: Frames of a fault report quoted in an error, at most.
QUOTED_FRAMES = 12

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


#: How the lines of a Python stack dump by faulthandler begin.
_DUMP_LINES = (b"Thread 0x", b"Current thread 0x", b"  File \"", b"  <no Python frame>", b"  ...",
               b"Stack (most recent call first)")


class Stream:
    __slots__ = ("fd", "wid", "pid", "err", "name", "partial", "tail", "capture")

    def __init__(self, fd: int, wid: int, pid: int, err: bool):
        self.fd = fd
        self.wid = wid
        self.pid = pid
        self.err = err
        self.name = "worker"
        self.partial = b""
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.capture: list[str] | None = None  # a stack dump being collected (see capture())


class OutputRouter:
    """Reads worker pipes (the shell calls read() when one is readable)."""

    def __init__(self, forward: bool):
        self.forward = forward
        self.streams: dict[int, Stream] = {}
        self.stderr_of: dict[int, Stream] = {}  # wid -> its stderr, kept until forget(wid)
        #: notified when a line of a stack dump is captured (the shell makes it on its lock)
        self.arrived: threading.Condition | None = None
        #: called with each progress line (the runtime draws the bars)
        self.progress: Callable[[bytes], None] | None = None
        #: (line, stream) -> True if it printed the line itself (above progress bars)
        self.writer: Callable[[str, Any], bool] | None = None

    def add(self, fd: int, wid: int, pid: int, err: bool) -> Stream:
        os.set_blocking(fd, False)
        s = self.streams[fd] = Stream(fd, wid, pid, err)
        if err:
            self.stderr_of[wid] = s
        return s

    def read(self, fd: int) -> bool | None:
        """Forward what is available: True if something was read, None if
        nothing was there, False at end of file (then fd is closed)."""
        s = self.streams[fd]
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            if s.partial:
                self._emit(s, s.partial)
                s.partial = b""
            del self.streams[fd]
            os.close(fd)
            return False
        lines = (s.partial + data).split(b"\n")
        s.partial = lines.pop()
        captured = False
        for line in lines:
            if line.startswith(MARKER):
                s.name = line[len(MARKER):].decode(errors="replace")
            elif line.startswith(PROGRESS):
                if self.progress is not None:
                    self.progress(line)
            elif s.capture is not None and (line.startswith(_DUMP_LINES) or not line):
                s.capture.append(line.decode(errors="replace"))
                captured = True
            else:
                self._emit(s, line)
        if captured and self.arrived is not None:
            self.arrived.notify_all()
        return True

    def capture(self, wids: list[int]) -> dict[int, list[str]]:
        """Collect, instead of forwarding, the stack dump lines that these
        workers write to stderr from now on (until end_capture()); returns
        {wid: the list they go to}."""
        out = {}
        for wid in wids:
            s = self.stderr_of.get(wid)
            if s is not None:
                s.capture = out[wid] = []
        return out

    def end_capture(self) -> None:
        for s in self.stderr_of.values():
            s.capture = None

    def _emit(self, s: Stream, line: bytes) -> None:
        text = line.decode(errors="replace")
        s.tail.append(text)
        if self.forward:
            out = sys.stderr if s.err else sys.stdout
            try:
                if self.writer is not None and self.writer(f"({s.name} pid={s.pid}) {text}", out):
                    return
                out.write(f"({s.name} pid={s.pid}) {text}\n")
                out.flush()
            except (ValueError, OSError):  # the driver closed its stream
                pass

    def tail(self, wid: int, lines: int = 20) -> str:
        """The last lines a worker wrote to stderr (for error messages)."""
        s = self.stderr_of.get(wid)
        return "\n".join(list(s.tail)[-lines:]) if s is not None else ""

    def fault_report(self, wid: int) -> str | None:
        """The crashing thread's Python stack from the fault report
        (faulthandler's) that worker wid wrote to stderr, user frames
        first and shoal's left out, with where the whole report is; None
        if it wrote none."""
        s = self.stderr_of.get(wid)
        lines = list(s.tail) if s is not None else []
        start = next((i for i in range(len(lines) - 1, -1, -1)
                      if lines[i].startswith("Fatal Python error:")), None)
        if start is None:
            return None
        frames, in_current = [], False
        for line in lines[start + 1:]:
            if line.startswith("Current thread "):
                in_current = True
            elif in_current and line.startswith('  File "'):
                path = line[len('  File "'):].split('"', 1)[0]
                if not path.startswith((_PACKAGE, "<frozen")):
                    frames.append(line)
            elif in_current:
                break
        text = f"{lines[start]}; the crashing thread's stack, most recent call first:"
        text += "".join(f"\n{f}" for f in frames[:QUOTED_FRAMES]) or "\n  (no frame outside shoal)"
        if len(frames) > QUOTED_FRAMES:
            text += f"\n  ... ({len(frames) - QUOTED_FRAMES} more)"
        if self.forward:
            text += f"\nThe whole report is in the output above, in lines prefixed with ({s.name} pid={s.pid})."
        return text

    def forget(self, wid: int) -> None:
        """Drop what was kept of worker wid's stderr (it has exited)."""
        self.stderr_of.pop(wid, None)

    def read_worker(self, wid: int) -> list[int]:
        """Forward what a worker's pipes hold now; the fds that reached EOF."""
        closed = []
        for fd, s in list(self.streams.items()):
            if s.wid == wid:
                while True:
                    r = self.read(fd)
                    if r is False:
                        closed.append(fd)
                    if not r:
                        break
        return closed

    def close(self) -> None:
        for fd in list(self.streams):
            self.read(fd)
            s = self.streams.pop(fd, None)
            if s is not None:
                if s.partial:
                    self._emit(s, s.partial)
                os.close(fd)
