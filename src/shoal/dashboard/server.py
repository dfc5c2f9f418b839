"""The dashboard's web server (aiohttp, the `dashboard` extra: the server Ray
uses, and too heavy for shoal's own dependencies).

    browser --GET /api/dashboard every second--> aiohttp (own thread and loop)
                                                   --> source("dashboard") in a thread pool:
                                                       Answers of this runtime (init(include_dashboard=True)),
                                                       or a control endpoint client (`shoal dashboard`)

Read-only: GET and HEAD only. Bound to 127.0.0.1 by default; a request whose
Host header names neither a loopback address nor the bound host is refused
(a DNS rebinding page cannot read it). The page (page.html) is one file with
its script and styles inline: nothing is fetched from elsewhere.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.resources
import json
import socket
import sys
import threading
from typing import Any, Callable

#: Host header names always accepted (with any port).
LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}

#: How long a page waits for an answer (seconds).
ANSWER_TIMEOUT_S = 20.0


def _page() -> bytes:
    return importlib.resources.files("shoal.dashboard").joinpath("page.html").read_bytes()


def _host_name(header: str) -> str:
    """The host of a Host header, without its port ("[::1]:80" -> "[::1]")."""
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def make_app(source: Callable[..., Any], bound_host: str):
    """The aiohttp application; source(question, **args) answers (blocking)."""
    from aiohttp import web

    allowed = set(LOCAL_HOSTS)
    if bound_host not in ("0.0.0.0", "::", ""):
        allowed.add(bound_host if ":" not in bound_host else f"[{bound_host}]")
    page = _page()

    @web.middleware
    async def guard(request, handler):
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="the dashboard is read-only\n", headers={"Allow": "GET, HEAD"})
        host = _host_name(request.headers.get("Host", ""))
        if host.lower() not in allowed:
            return web.Response(status=403, text=f"refused: Host {host!r} is not this machine's dashboard "
                                                 f"address (allowed: {', '.join(sorted(allowed))})\n")
        response = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'unsafe-inline'; " \
                                                      "script-src 'unsafe-inline'"
        return response

    async def ask(question: str, **args: Any):
        loop = asyncio.get_running_loop()
        try:
            result = await asyncio.wait_for(loop.run_in_executor(None, lambda: source(question, **args)),
                                            ANSWER_TIMEOUT_S)
        except Exception as e:  # the runtime is gone or could not answer: the page says so
            return web.json_response({"error": f"{type(e).__name__}: {e}"}, status=503)
        return web.Response(text=json.dumps(result, default=str), content_type="application/json")

    async def index(request):
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def dashboard(request):
        return await ask("dashboard")

    async def timeline(request):
        response = await ask("timeline")
        response.headers["Content-Disposition"] = "attachment; filename=shoal-timeline.json"
        return response

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", index)
    app.router.add_get("/api/dashboard", dashboard)
    app.router.add_get("/api/timeline", timeline)
    return app


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or on a free port if it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for p in (port, 0):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, p))
        except OSError as e:
            sock.close()
            if e.errno != errno.EADDRINUSE or p == 0:
                raise
            continue
        sock.listen(64)
        sock.set_inheritable(False)
        return sock
    raise AssertionError("unreachable")


class DashboardServer:
    """Serves the dashboard on its own thread and event loop.

    Args:
        source: source(question, **args) -> answer (called in a thread pool).
        host, port: where to listen; a taken port picks a free one (see url).
    Raises:
        ImportError: aiohttp is missing (pip install "shoal[dashboard]").
        OSError: the address cannot be bound.
    """

    def __init__(self, source: Callable[..., Any], host: str = "127.0.0.1", port: int = 8265):
        from aiohttp import web

        self._sock = _listen(host, port)
        self.port = self._sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        self._app = make_app(source, host)
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(self._app, access_log=None)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shoal-dashboard", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.SockSite(self._runner, self._sock).start())
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(10)
        self._sock.close()


def serve_for_cli(info, host: str, port: int, open_browser: bool) -> int:
    """`shoal dashboard`: serve the page for the runtime `info` until Ctrl-C
    or until the runtime ends."""
    from shoal.control import endpoint

    lock = threading.Lock()
    client: list = [None]

    def source(question: str, **args: Any) -> Any:
        with lock:  # one connection, one question at a time
            if client[0] is None:
                client[0] = endpoint.Client(info)
            try:
                return client[0].ask(question, **args)
            except endpoint.ControlError:
                client[0].close()
                client[0] = None
                raise

    try:
        server = DashboardServer(source, host, port)
    except ImportError:
        print('shoal: the dashboard needs aiohttp: pip install "shoal[dashboard]"', file=sys.stderr)
        return 1
    print(f"shoal dashboard for the runtime of pid {info.pid}: {server.url}  (Ctrl-C to stop)", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        import os
        import select

        try:
            driver = os.pidfd_open(info.pid)  # readable when the driver exits
        except ProcessLookupError:
            driver = None
        if driver is not None:
            select.select([driver], [], [])
            os.close(driver)
        print(f"shoal: the runtime of pid {info.pid} has ended", file=sys.stderr)
        return 0
    finally:
        server.close()
