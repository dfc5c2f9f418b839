"""Worker processes, seen from the driver: the fork server that starts them,
the channel to each, and what each prints.

Each worker gets one memfd holding two rings (tasks to it, messages from
it), an eventfd it sleeps on, and the driver's eventfd to wake the driver.
Its stdout and stderr are pipes that the driver reads and prefixes.
"""

from __future__ import annotations

import collections
import mmap
import os
import signal
import socket
import subprocess
import sys
import time

from shoal._channel import Ring, footprint
from shoal.scheduler import protocol

RING_CAPACITY = 1 << 20

#: A spawn the fork server has not reported after this many seconds means
#: it hangs (stopped, or stuck): the driver kills it and starts another.
#: Long, because a fork server first imports what workers need.
SPAWN_TIMEOUT_S = 30.0


def describe_exit(code: int | None) -> str:
    """Words for a process's exit code (negative: killed by that signal)."""
    if code is None:
        return "its exit status is unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        text = f"it was killed by {name}"
        if -code == signal.SIGKILL:
            text += " (the kernel's out-of-memory killer sends SIGKILL when memory runs out)"
        elif -code == signal.SIGSEGV:
            text += " (a segmentation fault, in native code)"
        return text
    return f"it exited with code {code}"


class WorkerHandle:
    """The driver's end of one worker."""

    def __init__(self, wid: int, capacity: int):
        self.wid = wid
        self.pid: int | None = None
        size = 2 * footprint(capacity)
        self.channel_fd = os.memfd_create(f"shoal-channel-{wid}", os.MFD_CLOEXEC)
        os.fchmod(self.channel_fd, 0o600)  # owner only, as the store (a memfd is born 0777)
        os.ftruncate(self.channel_fd, size)
        self.mem = mmap.mmap(self.channel_fd, size)
        self.to_worker = Ring(self.mem, 0, capacity, init=True)
        self.to_driver = Ring(self.mem, footprint(capacity), capacity, init=True)
        self.ring_offset = footprint(capacity)
        self.size = size
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # "a message for you"
        # "room in your outgoing ring": apart from wake_fd, so that a thread
        # waiting to send never takes the wake-up of a thread waiting to read.
        self.room_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.outbox: collections.deque[bytes] = collections.deque()
        self.out_fds: list[int] = []
        self.ready = False
        self.exit_code: int | None = None
        self.kill_when_spawned = False  # kill() came before the process existed
        self.pidfd = -1  # signals go through it: never to another process that reuses the pid
        self.gone = False  # it had exited before its pidfd could be opened
        self.exit_reason: str | None = None  # what it said (EXITING) before exiting on purpose
        self.oom = None  # the memory monitor's Kill, once it chose this process
        self.malformed: str | None = None  # what was wrong with a message it sent (it is stopped)
        self.last_end = 0.0  # when its last task ended (time.perf_counter(); kept with task events)

    def spawned(self, pid: int) -> None:
        """The fork server started the process `pid`."""
        self.pid = pid
        try:
            self.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already (its exit is on its way): never signal the pid
            self.pidfd = -1
            self.gone = True
        except OSError:  # no pidfds on this kernel: signal by pid
            self.pidfd = -1

    def signal(self, sig: int) -> None:
        """Send sig to the process, if it is still this worker's."""
        try:
            if self.pidfd >= 0:
                signal.pidfd_send_signal(self.pidfd, sig)
            elif self.pid is not None and not self.gone:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass  # it exited; the fork server reports it

    def send(self, data: bytes) -> None:
        """Queue a message for the worker (kept here while its ring is full)."""
        if self.outbox or not self.to_worker.send(data, self.wake_fd):
            self.outbox.append(data)

    def flush(self) -> None:
        outbox = self.outbox
        while outbox and self.to_worker.send(outbox[0], self.wake_fd):
            outbox.popleft()

    def close(self) -> None:
        for fd in (self.channel_fd, self.wake_fd, self.room_fd, self.pidfd):
            if fd >= 0:
                os.close(fd)
        self.channel_fd = self.wake_fd = self.room_fd = self.pidfd = -1
        self.to_worker = self.to_driver = None
        try:
            self.mem.close()
        except BufferError:  # a Ring still has a view: freed with it
            pass


def exit_code_of(pidfd: int) -> int | None:
    """Reap the exited child behind `pidfd` and return its exit code as
    Popen does (negative: the signal); None if it is not this process's
    child (another process reaped it)."""
    try:
        res = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None
    if res is None:
        return None
    if res.si_code == os.CLD_EXITED:
        return res.si_status
    return -res.si_status


def _children() -> list[int]:
    """This process's children (those of each of its threads)."""
    pids: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return pids


def _state_and_session(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[3])  # state, ppid, pgrp, session


def reap_strays(sessions: set[int], known: set[int], kill: bool = False) -> int:
    """Reap this process's children that belong to the runtime but that it
    does not track: workers a dead fork server forked but never reported,
    and processes that tasks started and left behind when their worker
    died (adopted here, a child subreaper). They are told apart from the
    program's own children by their session: each fork server leads one.
    kill: kill the live ones too (at shutdown). Returns how many were reaped."""
    reaped = 0
    for pid in _children():
        if pid in known:
            continue
        info = _state_and_session(pid)
        if info is None or info[1] not in sessions:
            continue
        if info[0] != "Z":
            if not kill:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(pid, 0)
            reaped += 1
        except ChildProcessError:
            pass
    return reaped


class WorkerPool:
    """Starts workers through a fork server; must be created by a thread
    that lives as long as the pool (the fork server dies with it).

    When the fork server dies its workers live on, adopted by this process
    (a child subreaper); `restart()` starts another fork server and asks
    it again for the workers whose start was not reported."""

    def __init__(self, store_fd: int, driver_fd: int, session: str, spin: float,
                 preload: list[str], ring_capacity: int = RING_CAPACITY, namespace: str = "",
                 worker_cfg: dict | None = None, remove_on_driver_death: list[str] = ()):
        self.driver_fd = driver_fd
        self.session = session
        self.namespace = namespace
        self.worker_cfg = dict(worker_cfg or {})  # passed to every worker (node id, environment)
        self.spin = spin
        self.ring_capacity = ring_capacity
        self.store_fd = store_fd
        self.remove_on_driver_death = list(remove_on_driver_death)
        self.preloaded = list(preload)
        self.pending: dict[int, tuple[WorkerHandle, dict]] = {}  # spawns not reported yet, by wid
        self.asked_at: dict[int, float] = {}  # wid -> time.monotonic() of its spawn's last sending
        self.servers = 0  # fork servers started
        self.sessions: set[int] = set()  # the session of each (its pid), which its workers share
        self.sock: socket.socket
        self.proc: subprocess.Popen
        self._launch()

    def _launch(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shoal.worker.forkserver", str(theirs.fileno()), str(self.store_fd),
                 f"--driver={os.getpid()}",
                 *(f"--remove-on-driver-death={p}" for p in self.remove_on_driver_death), *self.preloaded],
                pass_fds=(theirs.fileno(), self.store_fd),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # the terminal's Ctrl-C goes to the driver alone
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        self.server_pid: int | None = None
        self.servers += 1
        self.sessions.add(self.proc.pid)  # (start_new_session: it leads its own)

    def restart(self) -> None:
        """The fork server died (its socket closed): reap it, start another
        and send it again every spawn it did not report."""
        self.sock.close()
        self.proc.wait()  # dead already: its socket closed when it exited
        self._launch()
        for h, cfg in self.pending.values():
            self._send_spawn(h, cfg)

    def spawn_deadline(self) -> float | None:
        """time.monotonic() by which the oldest unreported spawn must be
        reported (None: none pending)."""
        if not self.asked_at:
            return None
        return min(self.asked_at.values()) + SPAWN_TIMEOUT_S

    def kill_server(self) -> None:
        """The fork server hangs: kill it (its socket's end then tells the
        I/O thread, which starts another)."""
        self.proc.kill()

    def spawned(self, wid: int) -> None:
        """The fork server reported worker wid's process: its channel's
        descriptor is no longer needed here."""
        entry = self.pending.pop(wid, None)
        self.asked_at.pop(wid, None)
        if entry is not None:
            h = entry[0]
            if h.channel_fd >= 0:
                os.close(h.channel_fd)  # the mapping stays; the worker has its own copy
                h.channel_fd = -1

    def start(self, wid: int, actor: bool = False, gpu_ids: tuple = ()) -> WorkerHandle:
        """Ask for a worker (an actor's process if `actor`); it reports
        READY over its ring when it runs."""
        h = WorkerHandle(wid, self.ring_capacity)
        cfg = {
            "wid": wid,
            "actor": actor,
            "session": self.session,
            "namespace": self.namespace,
            "channel_size": h.size,
            "ring_offset": h.ring_offset,
            "spin": self.spin,
            **self.worker_cfg,
            "gpu_ids": list(gpu_ids),  # an actor's devices, for its whole life
        }
        self.pending[wid] = (h, cfg)
        self._send_spawn(h, cfg)
        return h

    def _send_spawn(self, h: WorkerHandle, cfg: dict) -> None:
        self.asked_at[cfg["wid"]] = time.monotonic()
        try:
            protocol.send_with_fds(self.sock, ("spawn", cfg), [h.channel_fd, h.wake_fd, h.room_fd, self.driver_fd])
        except OSError:
            pass  # the fork server is dead: its socket's end tells the I/O thread, which restarts it

    def preload(self, modules: list[str]) -> None:
        self.preloaded.extend(modules)
        try:
            protocol.send_with_fds(self.sock, ("preload", modules))
        except OSError:
            pass  # (the next fork server gets them on its command line)

    def receive(self) -> tuple[object, list[int]]:
        """The fork server's next report: ("ready", pid), ("spawned", wid,
        pid) with the worker's [stdout, stderr] read ends, ("exited", wid,
        pid, code); (None, []) if the fork server is gone."""
        try:
            return protocol.recv_with_fds(self.sock)
        except (ConnectionError, OSError):
            return None, []

    def close(self, timeout: float = 10.0) -> None:
        """Stop the fork server, which kills every worker it started."""
        try:
            try:
                protocol.send_with_fds(self.sock, ("bye",))  # a shutdown, not a death
            except OSError:
                pass
            self.sock.close()
        finally:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
