"""The engine and the embedded cluster must work in a plain Python shell: no Qt, no GUI code."""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORBIDDEN = ("PyQt5", "PyQt6", "PySide2", "PySide6", "pyqtgraph", "qtpy", "widgets", "app")


def _imported_modules(path: pathlib.Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


@pytest.mark.parametrize("package", ["rules", "cluster"])
def test_no_qt_import_in_source(package):
    offenders = [f"{path.relative_to(ROOT)}: {name}"
                 for path in sorted((ROOT / package).rglob("*.py"))
                 for name in _imported_modules(path)
                 if name.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_engine_and_cluster_loads_no_qt():
    code = ("import sys, pkgutil, importlib, rules, cluster\n"
            "for pkg in (rules, cluster):\n"
            "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
            "        importlib.import_module(m.name)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PyQt5', 'pyqtgraph', 'IPython')]\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
