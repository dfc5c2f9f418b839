"""The fork server: a small single-threaded process that starts workers.

Started once per runtime (``python -m shoal.worker.forkserver SOCK STORE``),
it imports the worker code, then forks a worker whenever the driver asks:
a fork takes about a millisecond where a fresh interpreter takes tens (see
bench/bench_startup.py). It reaps its children and reports each exit.

    driver --("spawn", cfg) + [channel, 2 worker eventfds, driver eventfd]--> fork server
    driver <--("spawned", wid, pid) + [stdout, stderr read ends]---------- fork server
    driver <--("exited", wid, pid, returncode)---------------------------- fork server

Lifetime: when the driver goes (its end of the socket closes, whatever
killed it), the fork server kills its workers and exits. Each worker gets
SIGKILL if the fork server dies (PR_SET_PDEATHSIG), so no process outlives
the runtime. When the driver dies (its socket closes without a "bye", or
the SIGTERM that PR_SET_PDEATHSIG sends arrives first), the fork server
also removes the folders the driver named with --remove-on-driver-death
(its spill files) once its workers are dead.
"""

from __future__ import annotations

import importlib
import os
import selectors
import shutil
import signal
import socket
import sys
import traceback

from shoal._channel import set_parent_death_signal
from shoal.scheduler import protocol

send = protocol.send_with_fds
recv = protocol.recv_with_fds


class ForkServer:
    def __init__(self, sock: socket.socket, store_fd: int):
        self.sock = sock
        self.store_fd = store_fd
        self.pid = os.getpid()
        self.sel = selectors.DefaultSelector()
        self.sel.register(sock, selectors.EVENT_READ)
        self.children: dict[int, tuple[int, int]] = {}  # pidfd -> (wid, pid)

    def serve(self) -> bool:
        """Serve until the driver goes; True if it said goodbye first (a
        shutdown), False if its socket just closed (it died)."""
        while True:
            for key, _ in self.sel.select():
                if key.fileobj is self.sock:
                    msg, fds = recv(self.sock)
                    if msg is None:
                        return False
                    if msg[0] == "bye":
                        return True
                    self.handle(msg, fds)
                else:
                    self.reap(key.fd)

    def handle(self, msg, fds: list[int]) -> None:
        kind = msg[0]
        if kind == "spawn":
            self.spawn(msg[1], fds)
        elif kind == "preload":
            for name in msg[1]:
                try:
                    importlib.import_module(name)
                except Exception:
                    pass
        else:
            for fd in fds:
                os.close(fd)

    def spawn(self, cfg: dict, fds: list[int]) -> None:
        channel_fd, own_fd, room_fd, driver_fd = fds
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                for fd in (out_r, out_w, err_r, err_w):
                    os.close(fd)
                self._forget_in_child()
                set_parent_death_signal(signal.SIGKILL)
                if os.getppid() != self.pid:  # the fork server died before the prctl
                    os._exit(code)
                from shoal.worker import main as worker_main

                cfg.update(channel_fd=channel_fd, own_fd=own_fd, room_fd=room_fd, driver_fd=driver_fd,
                           store_fd=self.store_fd)
                worker_main.run(cfg)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        for fd in (out_w, err_w, channel_fd, own_fd, room_fd, driver_fd):
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (cfg["wid"], pid)
        self.sel.register(pidfd, selectors.EVENT_READ)
        send(self.sock, ("spawned", cfg["wid"], pid), [out_r, err_r])
        os.close(out_r)
        os.close(err_r)

    def _forget_in_child(self) -> None:
        """In a new worker: drop the server's descriptors."""
        for pidfd in self.children:
            os.close(pidfd)
        self.sel.close()
        self.sock.close()

    def reap(self, pidfd: int) -> None:
        wid, pid = self.children.pop(pidfd)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        try:
            send(self.sock, ("exited", wid, pid, code))
        except OSError:
            pass

    def shutdown(self) -> None:
        for _, pid in self.children.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pidfd, (_, pid) in list(self.children.items()):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            os.close(pidfd)
        self.children.clear()


class DriverDied(BaseException):
    """Raised in the serving loop by the SIGTERM that the driver's death sends."""


def _driver_died(signum, frame) -> None:
    raise DriverDied()


def main() -> None:
    sock_fd, store_fd = int(sys.argv[1]), int(sys.argv[2])
    remove = [a.split("=", 1)[1] for a in sys.argv[3:] if a.startswith("--remove-on-driver-death=")]
    preload = [a for a in sys.argv[3:] if not a.startswith("--")]
    # Inherited through exec (pass_fds clears close-on-exec): set it again,
    # so that no program a task starts gets the store or the driver's socket.
    # Forked workers still inherit both.
    os.set_inheritable(store_fd, False)
    os.set_inheritable(sock_fd, False)
    signal.signal(signal.SIGTERM, _driver_died)
    set_parent_death_signal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    sock = socket.socket(fileno=sock_fd)
    server = ForkServer(sock, store_fd)
    died = True
    try:
        # Import what every worker needs once, here, so that forks start warm.
        import shoal.worker.main  # noqa: F401

        for name in preload:
            try:
                importlib.import_module(name)
            except Exception:
                pass
        send(sock, ("ready", os.getpid()))
        died = not server.serve()
    except (BrokenPipeError, ConnectionResetError, DriverDied):
        pass  # the driver went away before or while we served it
    finally:
        # Clean up without interruption. The driver's SIGTERM can come at any
        # time, even now (its I/O thread exits at a normal shutdown too): its
        # DriverDied may interrupt this very call, which is then made again.
        while True:
            try:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                break
            except DriverDied:
                pass  # (whether the driver died was decided above)
        server.shutdown()
        if died:
            for path in remove:
                shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
