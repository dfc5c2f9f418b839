"""A real Ray cluster of two nodes on this machine, started with Ray's own
CLI (``ray start --head`` and ``ray start --address``), for the tests of
init(address=...). Its processes are found by the temporary folder and the
port that only they name, and are ended by their ids at the end (never by
name: other Ray clusters may run on the machine)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

#: Each node's object store, bytes (Ray's default is 30% of memory).
STORE_BYTES = 200 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (bound and released: refused when asked)."""
    return free_port()


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


@contextlib.contextmanager
def environment(values: dict):
    """Set environment variables for the block (None removes one), and have
    Ray, if imported, read them again: it reads its settings (token
    authentication among them) once, at import."""
    saved = {k: os.environ.get(k) for k in values}

    def apply(vals: dict) -> None:
        for k, v in vals.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if "ray" in sys.modules:
            from ray._raylet import Config

            Config.initialize("")

    apply(values)
    try:
        yield
    finally:
        apply(saved)


class RayCluster:
    """Two Ray nodes of one CPU each; `address` is the head's host:port."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="shoal-raycluster-")
        self.port = free_port()
        self.client_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # A token of its own: Ray's default token (~/.ray/auth_token) is shared
        # with any other Ray on the machine, which may replace it at any time.
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **self.auth}
        self.env.pop("RAY_ADDRESS", None)
        self.env.pop("RAY_AUTH_TOKEN_PATH", None)

    def _ray(self, *args: str) -> None:
        proc = subprocess.run([_ray_cli(), *args], capture_output=True, text=True, env=self.env, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    def start(self) -> "RayCluster":
        common = ["--num-cpus=1", f"--object-store-memory={STORE_BYTES}", "--disable-usage-stats",
                  f"--temp-dir={self.tmp}"]
        try:
            self._ray("start", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
                      "--include-dashboard=false", f"--ray-client-server-port={self.client_port}", *common)
            self._ray("start", f"--address={self.address}", "--node-ip-address=127.0.0.1", *common)
        except BaseException:
            self.stop()
            raise
        return self

    def processes(self) -> list[psutil.Process]:
        """The cluster's processes: those whose command line names its
        folder or port, and their descendants."""
        marks = (self.tmp, f":{self.port}")
        top = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or ())
            if any(m in cmd for m in marks):
                top.append(p)
        found = {p.pid: p for p in top}
        for p in top:
            try:
                found.update((c.pid, c) for c in p.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        found.pop(os.getpid(), None)
        return list(found.values())

    def stop(self) -> None:
        """End every process of the cluster (SIGTERM, then SIGKILL after 3 s)
        and remove its folder."""
        procs = self.processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=3)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)
