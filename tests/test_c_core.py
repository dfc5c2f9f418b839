"""Builds each csrc/tests/test_*.c with the C core (under AddressSanitizer
and UBSan where the compiler has them) and runs it."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"

pytestmark = pytest.mark.timeout(300)


def compiler() -> str:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) or shutil.which("cc") or shutil.which("gcc")


def build(tmp: Path, name: str, flags: list[str]) -> subprocess.CompletedProcess:
    sources = [str(CSRC / "tests" / f"test_{name}.c"), *sorted(glob.glob(str(CSRC / "*.c")))]
    return subprocess.run(
        [compiler(), "-std=gnu11", "-g", "-O1", "-Wall", "-Werror", "-I", str(CSRC), *flags,
         "-o", str(tmp / f"test_{name}"), *sources, "-lpthread"],
        capture_output=True, text=True,
    )


@pytest.mark.parametrize("name", ["store", "spill"])
def test_c_core(tmp_path, name):
    assert compiler(), "a C compiler is needed to build shoal"
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    built = build(tmp_path, name, sanitize)
    if built.returncode != 0:  # no sanitizer runtime here: test the plain build
        built = build(tmp_path, name, [])
    assert built.returncode == 0, built.stderr
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"}
    run = subprocess.run([str(tmp_path / f"test_{name}")], capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"all C {name} tests passed" in run.stdout
