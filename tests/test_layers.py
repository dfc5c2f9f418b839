"""Imports go one way, down the layers; leaf modules import only the
standard library; the package imports nothing heavy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import shoal

pytestmark = pytest.mark.timeout(60)

ROOT = Path(shoal.__file__).resolve().parent

LEAF = {"shoal.exceptions", "shoal.ids", "shoal.config", "shoal.words", "shoal.job_config"}
LAYERS = [
    ("binding", {"shoal._store._core", "shoal._channel", "shoal._store"}),
    ("serialization", {"shoal.serialization"}),
    ("store client", {"shoal.store", "shoal.spill"}),
    ("scheduler", {"shoal.scheduler"}),
    ("worker", {"shoal.objectref", "shoal.worker"}),
    ("api", {"shoal.api", "shoal.cluster", "shoal.runtime", "shoal.remote_function", "shoal.options", "shoal.local_mode",
             "shoal.actor", "shoal.util", "shoal.dag", "shoal.placement", "shoal.control", "shoal.cli", "shoal.dashboard", "shoal.experimental",
             "shoal"}),
]


def layer_of(module: str) -> int:
    if module in LEAF:
        return -1
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def modules():
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        yield name, path


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module != "shoal":  # "from shoal import x": x is the module
                out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


def test_imports_go_down_the_layers():
    bad = []
    for name, path in modules():
        mine = layer_of(name)
        for imp in imports_of(path):
            if not imp.startswith("shoal"):
                continue
            if ".".join(imp.split(".")[:2]) in LEAF:
                continue
            try:
                theirs = layer_of(imp)
            except AssertionError:
                continue  # "from shoal import x": x checked as its own module
            if theirs > mine:
                bad.append(f"{name} ({LAYERS[mine][0]}) imports {imp} ({LAYERS[theirs][0]})")
    assert not bad, "\n".join(bad)


def test_leaf_modules_import_only_the_standard_library():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for name in LEAF:
        path = ROOT / (name.split(".", 1)[1] + ".py")
        for imp in imports_of(path):
            assert imp.split(".")[0] in stdlib, f"{name} imports {imp}"


def test_import_has_no_side_effects_and_is_light():
    code = (
        "import sys, threading; import shoal; "
        "assert threading.active_count() == 1, 'a thread started at import'; "
        "heavy = [m for m in ('numpy', 'pyarrow') if m in sys.modules]; "
        "assert not heavy, heavy; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "ok", out.stderr
