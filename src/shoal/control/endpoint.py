"""The control endpoint: a Unix socket per runtime, in a folder only its user
can enter, speaking one JSON object per line each way.

    request:  {"q": "status", "args": {...}}
    answer:   {"ok": true, "result": ...}  or  {"ok": false, "error": "..."}

Only the runtime's user gets in: the folder is mode 0700 and owned by that
user (checked, not assumed), the socket is 0600, and every connection's
peer uid (SO_PEERCRED) must match.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
import struct
import sys
import threading
from typing import Any, Callable

from shoal import config as cfg

#: A client waits this long for an answer (seconds).
ASK_TIMEOUT_S = 30.0

#: Connections served at once; more are told to come back later.
MAX_CONNECTIONS = 16

#: The longest request line accepted (bytes).
MAX_REQUEST_BYTES = 1 << 16

SUFFIX = ".sock"


class ControlError(RuntimeError):
    """A runtime could not be reached or could not answer."""


class NoRuntimeError(ControlError, LookupError):
    """No running runtime of this user was found."""


class SeveralRuntimesError(ControlError, LookupError):
    """More than one runtime runs, and none was chosen (--pid)."""

    def __init__(self, message: str, found: list["RuntimeInfo"]):
        super().__init__(message)
        self.found = found


@dataclasses.dataclass(frozen=True)
class RuntimeInfo:
    """A runtime's control socket (pid: its driver process)."""

    pid: int
    session: str
    path: str


def ensure_runtime_dir(path: str | None = None) -> str:
    """The per-user runtime folder, made mode 0700 if missing. Raises
    PermissionError if it is not a folder of this user's that only this
    user can enter (then nothing is put there)."""
    path = path or cfg.runtime_dir()
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(f"{path} is not a folder owned by uid {os.getuid()} (owner uid {st.st_uid}); "
                              f"remove it or set SHOAL_RUNTIME_DIR to another folder")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)  # ours, but open to others: close it before use
    return path


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class ControlServer:
    """Answers questions for one runtime on a thread that sleeps in accept().

    Args:
        answer: (question, args) -> a JSON-able result; it raises to refuse.
        session: the runtime's session id (names the socket).
        folder: where the socket goes (config.runtime_dir() by default).
    """

    def __init__(self, answer: Callable[[str, dict], Any], session: str, folder: str | None = None):
        self.answer = answer
        self.uid = os.getuid()  #: the only peer uid served
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            for attempt in range(3):
                self.path = socket_path(session, ensure_runtime_dir(folder))
                try:
                    self.sock.bind(self.path)
                    break
                except FileNotFoundError:  # another runtime's close removed the empty folder just now
                    if attempt == 2:
                        raise
            os.chmod(self.path, 0o600)
            self.sock.listen(MAX_CONNECTIONS)
        except BaseException:
            self.sock.close()
            raise
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="shoal-control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop answering, close every connection and remove the socket."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._conns)
        for s in [self.sock, *conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked on them
            except OSError:
                pass
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)
        self.sock.close()
        remove_socket(self.path)

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            if _peer_uid(conn) != self.uid:
                conn.close()  # (the folder's mode keeps others out; this makes sure)
                continue
            with self._lock:
                if self._closed or len(self._conns) >= MAX_CONNECTIONS:
                    busy = not self._closed
                    conn_ok = False
                else:
                    self._conns.add(conn)
                    conn_ok = True
            if not conn_ok:
                if busy:
                    _send(conn, {"ok": False, "error": f"the runtime serves {MAX_CONNECTIONS} connections "
                                                      f"at most; try again when one closes"})
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="shoal-control-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            reader = conn.makefile("rb")
            for line in reader:
                if len(line) > MAX_REQUEST_BYTES:
                    _send(conn, {"ok": False, "error": f"request over {MAX_REQUEST_BYTES} bytes"})
                    return
                _send(conn, self._answer(line))
        except OSError:
            pass  # the client went away, or the server closes
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
            question, args = request["q"], request.get("args") or {}
            if not isinstance(question, str) or not isinstance(args, dict):
                raise TypeError("q must be a string and args an object")
        except (ValueError, KeyError, TypeError) as e:
            return {"ok": False, "error": f"malformed request ({e}); send {{\"q\": question, \"args\": {{}}}}"}
        try:
            return {"ok": True, "result": self.answer(question, args)}
        except Exception as e:  # an answer that fails is reported to the asker, never raised here
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message, default=str).encode() + b"\n")


def socket_path(session: str, folder: str | None = None) -> str:
    """Where this process's runtime `session` answers (folder: None means
    config.runtime_dir())."""
    return os.path.join(folder or cfg.runtime_dir(), f"{os.getpid()}-{session}{SUFFIX}")


def remove_socket(path: str) -> None:
    """Remove a runtime's socket, and the runtime folder with it when no
    other runtime of this user has a socket there (nothing is left in the
    temp folder once the last runtime is gone)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:  # another runtime's socket is there (or it is gone already)
        pass


# -- the client side ---------------------------------------------------------------


def runtimes(folder: str | None = None) -> list[RuntimeInfo]:
    """The runtimes of this user that run now, oldest pid first. Sockets
    left by a driver that was killed are removed."""
    folder = folder or cfg.runtime_dir()
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if not name.endswith(SUFFIX):
            continue
        pid_text, _, session = name[: -len(SUFFIX)].partition("-")
        if not pid_text.isdigit():
            continue
        path = os.path.join(folder, name)
        if not _alive(int(pid_text)):
            remove_socket(path)  # its driver died without shutting down
            continue
        found.append(RuntimeInfo(int(pid_text), session, path))
    return sorted(found, key=lambda r: r.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def choose(pid: int | None = None, folder: str | None = None) -> RuntimeInfo:
    """The runtime to ask: the one with driver `pid`, or the only one."""
    found = runtimes(folder)
    where = folder or cfg.runtime_dir()
    if pid is not None:
        for r in found:
            if r.pid == pid:
                return r
        pids = ", ".join(str(r.pid) for r in found) or "none"
        raise NoRuntimeError(f"no shoal runtime with driver pid {pid} (running here: {pids}; looked in {where})")
    if not found:
        raise NoRuntimeError(f"no shoal runtime is running for this user (looked in {where})")
    if len(found) > 1:
        raise SeveralRuntimesError(f"{len(found)} shoal runtimes are running; choose one with --pid", found)
    return found[0]


class Client:
    """A connection to one runtime's control endpoint."""

    def __init__(self, info: RuntimeInfo, timeout: float = ASK_TIMEOUT_S):
        self.info = info
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(info.path)
        except OSError as e:
            self.sock.close()
            raise ControlError(f"cannot reach the runtime of pid {info.pid} at {info.path}: {e}") from e
        self.reader = self.sock.makefile("rb")

    def ask(self, question: str, **args: Any) -> Any:
        """The runtime's answer to `question` (raises ControlError if it
        could not answer, with its reason)."""
        try:
            self.sock.sendall(json.dumps({"q": question, "args": args}).encode() + b"\n")
            line = self.reader.readline()
        except OSError as e:
            raise ControlError(f"the runtime of pid {self.info.pid} did not answer {question!r}: {e}") from e
        if not line:
            raise ControlError(f"the runtime of pid {self.info.pid} closed the connection (it is shutting down)")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise ControlError(f"the runtime of pid {self.info.pid} could not answer {question!r}: "
                               f"{reply.get('error')}")
        return reply["result"]

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def warn_unavailable(error: BaseException) -> None:
    """One line on stderr when a runtime starts without its endpoint."""
    sys.stderr.write(f"shoal: the control endpoint is off for this runtime (`shoal status` will not find it): "
                     f"{error}\n")
