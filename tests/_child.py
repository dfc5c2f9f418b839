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
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.pid = self.proc.pid

    def expect(self, timeout: float = 20.0) -> str:
        """The child's next line of output; fails with its stderr if it
        exits or says nothing within `timeout` seconds."""
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                raise AssertionError(f"child {self.pid} said nothing within {timeout} s")
        finally:
            sel.close()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout)
            raise AssertionError(
                f"child {self.pid} exited with {self.proc.returncode}: {self.proc.stderr.read()}"
            )
        return line.strip()

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL the child and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 20.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                try:
                    f.close()
                except OSError:
                    pass
        return rc

    def stderr(self) -> str:
        return self.proc.stderr.read()


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
