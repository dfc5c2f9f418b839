"""The fork server: a small single-threaded process that starts workers.

Started by the driver (``python -m shoal.worker.forkserver SOCK STORE``),
it imports the worker code, then forks a worker whenever the driver asks:
a fork takes about a millisecond where a fresh interpreter takes tens (see
bench/bench_startup.py). It reaps its children and reports each exit.

    driver --("spawn", cfg) + [channel, 2 worker eventfds, driver eventfd]--> fork server
    driver <--("spawned", wid, pid) + [stdout, stderr read ends]---------- fork server
    driver <--("exited", wid, pid, returncode)---------------------------- fork server

A new worker waits for a byte on a pipe that the fork server writes only
after its "spawned" report is sent: a worker the driver never heard of
never runs (the fork server's death closes the pipe, and the worker exits).

Lifetimes:
- The driver dies (its end of the socket closes, whatever killed it, or
  PARENT_DEATH_SIGNAL arrives first) or shuts down ("bye"): the fork
  server kills its workers, removes the paths named with
  --remove-on-driver-death (its spill files, its control socket) and exits. (After a "bye"
  the driver removes them too; the fork server doing it covers a driver
  killed in the rest of its shutdown.)
- The fork server dies (any signal, SIGTERM included): its workers live on.
  The driver is a child subreaper, so the kernel makes it their parent, and
  it starts another fork server. Each worker got PARENT_DEATH_SIGNAL for its
  parent's death, with a C handler that kills it unless its new parent is the
  driver (``_channel.die_with``); the signal comes again when the driver
  dies, so no process outlives the runtime.
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

from shoal._channel import die_with, set_parent_death_signal
from shoal.scheduler import protocol

send = protocol.send_with_fds
recv = protocol.recv_with_fds

#: Sent by the kernel to the fork server and to workers when their parent
#: dies (PR_SET_PDEATHSIG). A real-time signal that nothing else uses, so
#: that SIGTERM keeps its usual meaning.
PARENT_DEATH_SIGNAL = signal.SIGRTMAX - 2


def release(go_w: int) -> None:
    """Let a new worker run (it waits for a byte on its pipe). It may be
    dead already, killed as soon as the driver learnt its pid: its exit is
    reported like any other, and the fork server goes on."""
    try:
        os.write(go_w, b"g")
    except BrokenPipeError:
        pass


class _DriverDied(BaseException):
    """The driver died while the fork server was starting."""


class ForkServer:
    def __init__(self, sock: socket.socket, store_fd: int, signalled: int = -1, driver_pid: int | None = None):
        self.sock = sock
        self.store_fd = store_fd
        self.signalled = signalled  # readable once a signal came (the driver's death)
        self.pid = os.getpid()
        self.driver_pid = os.getppid() if driver_pid is None else driver_pid
        self.sel = selectors.DefaultSelector()
        self.sel.register(sock, selectors.EVENT_READ)
        if signalled >= 0:
            self.sel.register(signalled, selectors.EVENT_READ)
        self.children: dict[int, tuple[int, int]] = {}  # pidfd -> (wid, pid)

    def serve(self) -> bool:
        """Serve until the driver goes; True if it said goodbye first (a
        shutdown), False if its socket just closed or its death's signal
        came."""
        while True:
            for key, _ in self.sel.select():
                if key.fd == self.signalled:
                    try:
                        os.read(self.signalled, 64)
                    except BlockingIOError:
                        pass
                    if os.getppid() != self.driver_pid:
                        return False  # the driver died: we were adopted by another process
                    continue  # a stray signal (the driver lives)
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
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                wake = signal.set_wakeup_fd(-1)  # (signals here are the worker's own)
                if wake >= 0:
                    os.close(wake)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                for fd in (out_r, out_w, err_r, err_w, go_w):
                    os.close(fd)
                self._forget_in_child()
                die_with(self.driver_pid, PARENT_DEATH_SIGNAL)
                # Run only once the driver is told of this process: an empty
                # read means the fork server died first, and the driver
                # starts this worker again through the next one.
                go = os.read(go_r, 1)
                os.close(go_r)
                if go != b"g" or os.getppid() not in (self.pid, self.driver_pid):
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
        for fd in (out_w, err_w, go_r, channel_fd, own_fd, room_fd, driver_fd):
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (cfg["wid"], pid)
        self.sel.register(pidfd, selectors.EVENT_READ)
        try:
            send(self.sock, ("spawned", cfg["wid"], pid), [out_r, err_r])
            release(go_w)
        finally:
            for fd in (out_r, err_r, go_w):
                os.close(fd)

    def _forget_in_child(self) -> None:
        """In a new worker: drop the server's descriptors."""
        if self.signalled >= 0:
            os.close(self.signalled)
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


def main() -> None:
    sock_fd, store_fd = int(sys.argv[1]), int(sys.argv[2])
    remove = [a.split("=", 1)[1] for a in sys.argv[3:] if a.startswith("--remove-on-driver-death=")]
    preload = [a for a in sys.argv[3:] if not a.startswith("--")]
    # Inherited through exec (pass_fds clears close-on-exec): set it again,
    # so that no program a task starts gets the store or the driver's socket.
    # Forked workers still inherit both.
    os.set_inheritable(store_fd, False)
    os.set_inheritable(sock_fd, False)
    driver_pid = int(next((a.split("=", 1)[1] for a in sys.argv[3:] if a.startswith("--driver=")),
                          os.getppid()))
    # The driver's death sends PARENT_DEATH_SIGNAL (PR_SET_PDEATHSIG). Its
    # handler does nothing but make the serving loop's selector see a byte
    # on a pipe: no exception can then land in the middle of the clean-up.
    # SIGTERM keeps its default action: the fork server dies, its workers
    # live on and the driver starts another.
    signalled, wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    starting = True

    def on_parent_death(signum, frame):
        # While it starts (imports take a while) it has no worker to kill:
        # the driver's death ends it at once. Afterwards the serving loop
        # sees the signal's byte on the pipe and cleans up.
        if starting and os.getppid() != driver_pid:
            raise _DriverDied()

    signal.signal(PARENT_DEATH_SIGNAL, on_parent_death)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    sock = socket.socket(fileno=sock_fd)
    server = ForkServer(sock, store_fd, signalled, driver_pid)
    failed = False
    try:
        set_parent_death_signal(PARENT_DEATH_SIGNAL)
        if os.getppid() != driver_pid:  # the driver died before the prctl
            raise _DriverDied()
        # Import what every worker needs once, here, so that forks start warm.
        import shoal.worker.main  # noqa: F401

        for name in preload:
            try:
                importlib.import_module(name)
            except Exception:
                pass
        starting = False
        if os.getppid() != driver_pid:
            raise _DriverDied()
        send(sock, ("ready", os.getpid()))
        server.serve()
    except (BrokenPipeError, ConnectionResetError, _DriverDied):
        pass  # the driver went away before or while we served it
    except BaseException:
        # A failure of our own: the driver adopts the workers and starts
        # another fork server, so they live on, with the driver's files.
        failed = os.getppid() == driver_pid
        raise
    finally:
        if not failed:
            # The driver's death or its shutdown: the workers go, then the
            # spill folders (also after a goodbye: a driver killed later in
            # its shutdown must not leave them).
            server.shutdown()
            for path in remove:
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:  # the control endpoint's socket (and its folder, if no other runtime uses it)
                    try:
                        os.unlink(path)
                        os.rmdir(os.path.dirname(path))
                    except OSError:
                        pass


if __name__ == "__main__":
    main()
