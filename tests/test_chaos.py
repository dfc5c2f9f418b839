"""A short chaos run (bench/chaos.py, a fixed seed) in the suite: random
SIGKILL, SIGSEGV, SIGTERM and SIGSTOP of workers, actors and the fork
server under a mixed workload; and SIGKILL of the driver inside each of
put, get, submit, actor creation and shutdown."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

CHAOS = Path(__file__).resolve().parent.parent / "bench" / "chaos.py"


def load_chaos():
    spec = importlib.util.spec_from_file_location("shoal_bench_chaos", CHAOS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(600)
def test_chaos_rounds(tmp_path):
    out = tmp_path / "chaos.json"
    proc = subprocess.run([sys.executable, str(CHAOS), "--rounds", "3", "--seed", "7", "--interval", "0.05",
                           "--json", str(out)], capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())["chaos"]
    report = proc.stdout[-4000:]
    assert result["rounds"] == 3
    assert sum(result["faults"].values()) > 0, report
    assert result["refs"] > 0 and result["ok"] > 0, report
    assert result["hangs"] == 0, report
    assert result["wrong"] == 0, report
    assert result["untyped"] == {}, report
    assert result["leaks"] == 0, report


@pytest.mark.timeout(180)
@pytest.mark.parametrize("point", ["put", "get", "submit", "actor_creation", "shutdown"])
def test_driver_killed_inside(point):
    chaos = load_chaos()
    r = chaos.kill_driver(point, seed=11, size=1 << 20, timeout=120)
    assert r["reached"], f"the workload never reached {point}"
    assert r["left"] == [], r
