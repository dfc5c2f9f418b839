"""Surviving the fork server's death: a mixin of the Shell.

    fork server dies --socket EOF (after its last reports)--> _fork_server_died
        workers it started: adopted by the driver (a child subreaper); their
            pidfds join the I/O thread's selector; each exit is reaped here
        spawns it never reported: sent again to a new fork server

The workers themselves notice nothing: PR_SET_PDEATHSIG fires in each, and
its handler (C, in _channel) keeps it alive because its new parent is the
driver (see shoal.worker.forkserver).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time

from shoal import exceptions as exc
from shoal.scheduler import pool as worker_pool
from shoal.scheduler.pool import describe_exit, exit_code_of, reap_strays

#: Fork servers that die before saying they are ready this many times in a
#: row end the runtime (one that cannot start is not coming back).
MAX_SERVER_FAILURES = 3


class Respawn:
    """What the Shell does when its fork server dies. Expects the Shell's
    attributes: pool, workers, sel, adopted, broken, _server_failures."""

    def _fork_server_died(self) -> None:
        """Every report the fork server sent is read: the workers it had
        started are this process's children now. Watch them, and start
        another fork server, which starts the workers not reported yet."""
        self.sel.unregister(self.pool.sock)
        if self.pool.server_pid is None:
            self._server_failures += 1
        try:
            code = self.pool.proc.wait(5)  # its socket closed as it exited: reaped at once
        except subprocess.TimeoutExpired:  # (closed it without exiting: a bug; it is killed)
            self.pool.proc.kill()
            code = self.pool.proc.wait()
        if self._server_failures >= MAX_SERVER_FAILURES:
            self.broken = exc.RaySystemError(
                f"{self._server_failures} fork servers in a row died while starting (the last one: "
                f"{describe_exit(code)}); the runtime cannot start workers: call shutdown() and init() again")
            self._fail_everything(self.broken)
            return
        for wid, h in list(self.workers.items()):
            if h.pid is None or wid in self.adopted:
                continue  # not started yet (the next fork server starts it), or watched already
            if h.pidfd < 0:  # exited before its pidfd could be opened, report lost with the fork server
                self._on_worker_exit(wid, None)
                continue
            self.adopted.add(wid)
            self.sel.register(h.pidfd, selectors.EVENT_READ, wid)
        self.pool.restart()
        self.sel.register(self.pool.sock, selectors.EVENT_READ, "pool")
        sys.stderr.write(f"shoal: the fork server died ({describe_exit(code)}); "
                         f"started another; {len(self.adopted)} workers it had started go on\n")

    def _check_fork_server(self) -> None:
        """A fork server that leaves a spawn unreported for SPAWN_TIMEOUT_S
        hangs: kill it, and the death's path starts another."""
        due = self.pool.spawn_deadline()
        if due is not None and time.monotonic() >= due and self.pool.proc.poll() is None:
            sys.stderr.write(f"shoal: the fork server (pid {self.pool.proc.pid}) did not start a worker within "
                             f"{worker_pool.SPAWN_TIMEOUT_S:g} s; it is killed and another started\n")
            self.pool.kill_server()

    def _on_adopted_exit(self, wid: int) -> None:
        """A worker whose fork server had died exited: reap it here."""
        h = self.workers.get(wid)
        self.adopted.discard(wid)
        if h is None:
            return
        self.sel.unregister(h.pidfd)
        self._on_worker_exit(wid, exit_code_of(h.pidfd))

    def _reap_strays(self, kill: bool = False, everyone: bool = False) -> None:
        """Reap (kill: and kill) the runtime's processes this process adopted
        but does not track (see pool.reap_strays); everyone: the workers it
        tracks too (at shutdown, once the fork server is gone: a fork server
        that had to be killed leaves its workers to this process)."""
        pool = self.pool
        if pool is None:
            return
        known = {pool.proc.pid}
        if not everyone:
            known.update(h.pid for h in self.workers.values() if h.pid is not None)
        reap_strays(pool.sessions, known, kill)

    def _watch_spawn(self) -> None:
        """A spawn was asked for: the I/O thread must wake by its deadline
        (see _check_fork_server), so tell it if another thread asked."""
        if threading.current_thread() is not self._thread:
            self.wake()

    def _kill_adopted(self) -> None:
        """At shutdown: kill and reap the workers this process adopted."""
        for wid in list(self.adopted):
            h = self.workers.get(wid)
            if h is None or h.pidfd < 0:
                continue
            h.signal(signal.SIGKILL)
            try:
                os.waitid(os.P_PIDFD, h.pidfd, os.WEXITED)
            except ChildProcessError:
                pass
        self.adopted.clear()

