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

MARKER = b"\x00shoal:"


class Stream:
    __slots__ = ("fd", "wid", "pid", "err", "name", "partial", "tail")

    def __init__(self, fd: int, wid: int, pid: int, err: bool):
        self.fd = fd
        self.wid = wid
        self.pid = pid
        self.err = err
        self.name = "worker"
        self.partial = b""
        self.tail: collections.deque[str] = collections.deque(maxlen=20)


class OutputRouter:
    """Reads worker pipes (the shell calls read() when one is readable)."""

    def __init__(self, forward: bool):
        self.forward = forward
        self.streams: dict[int, Stream] = {}
        self.tails: dict[int, collections.deque[str]] = {}  # wid -> last stderr lines

    def add(self, fd: int, wid: int, pid: int, err: bool) -> Stream:
        os.set_blocking(fd, False)
        s = self.streams[fd] = Stream(fd, wid, pid, err)
        if err:
            self.tails[wid] = s.tail
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
        for line in lines:
            if line.startswith(MARKER):
                s.name = line[len(MARKER):].decode(errors="replace")
            else:
                self._emit(s, line)
        return True

    def _emit(self, s: Stream, line: bytes) -> None:
        text = line.decode(errors="replace")
        s.tail.append(text)
        if self.forward:
            out = sys.stderr if s.err else sys.stdout
            try:
                out.write(f"({s.name} pid={s.pid}) {text}\n")
                out.flush()
            except (ValueError, OSError):  # the driver closed its stream
                pass

    def tail(self, wid: int) -> str:
        """The last lines a worker wrote to stderr (for error messages)."""
        return "\n".join(self.tails.get(wid, ()))

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
