"""A child Python process driven line by line over its stdin/stdout, for
multi-process tests: no sleeps, every wait has a timeout."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time

PRELUDE = """
import os, sys
def say(*words):
    print(*words, flush=True)
def hear():
    return sys.stdin.readline().strip()
"""


class Child:
    """Runs `code` in a fresh interpreter with `fds` inherited; the code
    talks with say()/hear()."""

    def __init__(self, code: str, fds: tuple[int, ...] = (), args: tuple = (), env: dict | None = None):
        src = PRELUDE + textwrap.dedent(code)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", src, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=fds,
            env={**os.environ, **(env or {})},
        )
        self.pid = self.proc.pid
        self._buffer = b""

    def expect(self, timeout: float = 20.0) -> str:
        """The child's next line of output; fails with its stderr if it
        exits or says nothing within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            sel = selectors.DefaultSelector()
            sel.register(fd, selectors.EVENT_READ)
            try:
                ready = sel.select(max(left, 0))
            finally:
                sel.close()
            if not ready:
                raise AssertionError(f"child {self.pid} said nothing within {timeout} s")
            data = os.read(fd, 65536)
            if not data:
                self.proc.wait(timeout)
                raise AssertionError(
                    f"child {self.pid} exited with {self.proc.returncode}: {self.stderr()}")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip()

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL the child and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the child to exit (keeping its stderr for stderr())."""
        try:
            rc = self.proc.wait(timeout)
            self.stderr()
        finally:
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                try:
                    f.close()
                except OSError:
                    pass
        return rc

    def stderr(self) -> str:
        """Everything the child wrote to stderr (read once it has exited)."""
        if not self.proc.stderr.closed and self.proc.poll() is not None:
            self._stderr = self.proc.stderr.read().decode(errors="replace")
        return getattr(self, "_stderr", "")


def shm_entries() -> set[str]:
    """shoal's own entries in /dev/shm. Other programs may create theirs
    (multiprocessing.shared_memory's psm_*) at any time: never compare the
    whole listing."""
    try:
        return {n for n in os.listdir("/dev/shm") if "shoal" in n.lower()}
    except FileNotFoundError:
        return set()


def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` (a state change with no event to wait on, such as a
    process disappearing from /proc) until true or `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def process_gone(pid: int) -> bool:
    """Whether process pid has exited (a zombie counts: it runs no more)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def gate_actor(ray, value: str = "opened"):
    """An actor whose wait() returns `value` once open() was called."""
    import asyncio

    @ray.remote(num_cpus=0)
    class Gate:
        def __init__(self):
            self.event = asyncio.Event()

        async def wait(self):
            await self.event.wait()
            return value

        async def open(self):
            self.event.set()

    return Gate.remote()
