"""The live dashboard, loaded in a real headless browser (Debian's chromium;
.ci/run installs it), and its server's guards."""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")  # in the test extra

pytestmark = pytest.mark.timeout(180)

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

#: Where the screenshot goes (docs/ keeps the one the README shows).
SCREENSHOT = Path(os.environ.get("SHOAL_DASHBOARD_SCREENSHOT", "")) if os.environ.get(
    "SHOAL_DASHBOARD_SCREENSHOT") else None


class Texts(html.parser.HTMLParser):
    """The text of each element with an id, and the actor rows' cells."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.actor_rows: list[list[str]] = []
        self._stack: list[tuple[str, str | None, bool]] = []
        self._cells: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and a.get("class") == "actor-row":
            self._cells = []
        if tag == "td" and self._cells is not None:
            self._cells.append("")
        self._stack.append((tag, a.get("id"), False))

    def handle_endtag(self, tag):
        while self._stack:
            t, _, _ = self._stack.pop()
            if t == tag:
                break
        if tag == "tr" and self._cells is not None:
            self.actor_rows.append([c.strip() for c in self._cells])
            self._cells = None

    def handle_data(self, data):
        for _, ident, _ in self._stack:
            if ident:
                self.by_id[ident] = self.by_id.get(ident, "") + data
        if self._cells:
            self._cells[-1] += data


def browse(url: str, screenshot: Path | None = None) -> Texts:
    """The page's DOM after its scripts ran ~5 s of virtual time."""
    args = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1250",
            "--virtual-time-budget=5000"]
    if screenshot is not None:
        out = subprocess.run(args + [f"--screenshot={screenshot}", url], capture_output=True, timeout=120)
        assert screenshot.exists(), out.stderr.decode(errors="replace")[-2000:]
    out = subprocess.run(args + ["--dump-dom", url], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-2000:]
    page = Texts()
    page.feed(out.stdout.decode())
    return page


@pytest.fixture
def dashboard(tmp_path, monkeypatch):
    import shoal

    monkeypatch.setenv("SHOAL_RUNTIME_DIR", str(tmp_path / "run"))
    ctx = shoal.init(num_cpus=2, object_store_memory=256 << 20, include_dashboard=True, dashboard_port=0)
    try:
        yield shoal, "http://" + ctx.dashboard_url
    finally:
        shoal.shutdown()


def test_the_page_shows_the_job_and_changes_as_it_runs(dashboard, tmp_path):
    if BROWSER is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium in CI: .ci/run installs it")
        pytest.skip("no chromium here (apt-get install chromium)")
    ray, url = dashboard
    gate = tmp_path / "gate"

    @ray.remote
    def step(x):
        time.sleep(0.05)
        return b"r" * x

    @ray.remote
    def diverges():
        raise FloatingPointError("loss became NaN at step 3")

    @ray.remote
    def waits():
        while not gate.exists():
            time.sleep(0.005)
        return 1

    @ray.remote
    class ParameterServer:
        def push(self, g):
            return g

    ps = ParameterServer.options(name="params").remote()
    assert ray.get([ps.push.remote(i) for i in range(3)], timeout=30) == [0, 1, 2]
    data = ray.put(b"d" * 20_000_000)
    assert len(ray.get([step.remote(1000) for _ in range(8)], timeout=30)) == 8
    with pytest.raises(FloatingPointError):
        ray.get(diverges.remote(), timeout=30)
    running = waits.remote()
    from shoal.util import state
    from tests._child import wait_until

    wait_until(lambda: any(t["state"] == "FAILED" for t in state.list_tasks())
               and any(t["state"] == "RUNNING" for t in state.list_tasks()), what="failed and running tasks")
    try:
        first = browse(url)
        assert int(first.by_id["updates"]) >= 2, "the page did not update by itself"
        assert first.by_id["live"].startswith("live"), first.by_id["live"]
        assert first.by_id["tasks-running"] == "1"
        finished = int(first.by_id["tasks-finished"])
        assert finished >= 11  # 8 steps and 3 calls
        assert first.by_id["tasks-failed"] == "1"
        assert "loss became NaN at step 3" in first.by_id["failures"]
        assert ["ParameterServer", "params", "ALIVE"] == first.actor_rows[0][:3]
        used = first.by_id["store-used"]
        assert used.endswith("MiB") and float(used.split()[0]) >= 19  # the 20 MB object
        assert "waits" in first.by_id["workers"]  # what the busy worker runs
        assert ray.get([step.remote(10) for _ in range(5)], timeout=30)
        wait_until(lambda: sum(1 for t in state.list_tasks(limit=1000) if t["state"] == "FINISHED") >= finished + 5,
                   what="the new tasks recorded")
        shot = SCREENSHOT or tmp_path / "dashboard.png"
        second = browse(url, screenshot=shot)
        assert int(second.by_id["tasks-finished"]) >= finished + 5
        assert shot.stat().st_size > 10_000
    finally:
        gate.touch()
    assert ray.get(running, timeout=30) == 1
    del data


def get(url: str, host: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_server_is_local_read_only_and_self_contained(dashboard):
    ray, url = dashboard
    status, body = get(url + "/")
    assert status == 200 and b"<script>" in body
    assert b"http://" not in body and b"https://" not in body.replace(b"https://ui.perfetto.dev", b"")
    status, body = get(url + "/api/dashboard")
    assert status == 200 and json.loads(body)["status"]["pid"] == os.getpid()
    status, body = get(url + "/api/dashboard", host="attacker.example:80")
    assert status == 403 and b"attacker.example" in body
    status, _ = get(url + "/api/dashboard", host=f"localhost:{url.rsplit(':', 1)[1]}")
    assert status == 200
    status, body = get(url + "/api/dashboard", method="POST")
    assert status == 405
    status, body = get(url + "/api/timeline")
    assert status == 200 and isinstance(json.loads(body), list)


def test_off_by_default_and_a_taken_port_picks_another(tmp_path, monkeypatch):
    import socket

    import shoal

    monkeypatch.setenv("SHOAL_RUNTIME_DIR", str(tmp_path / "run"))
    ctx = shoal.init(num_cpus=1, object_store_memory=64 << 20)
    try:
        assert ctx.dashboard_url is None
        from shoal import objectref

        assert objectref.current().dashboard is None
    finally:
        shoal.shutdown()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        ctx = shoal.init(num_cpus=1, object_store_memory=64 << 20, include_dashboard=True, dashboard_port=port)
        try:
            assert ctx.dashboard_url.startswith("127.0.0.1:") and not ctx.dashboard_url.endswith(f":{port}")
            assert get("http://" + ctx.dashboard_url + "/")[0] == 200
        finally:
            shoal.shutdown()
    finally:
        taken.close()
