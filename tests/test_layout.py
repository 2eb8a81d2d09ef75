"""The layout: include/ is plain Python that needs no Airflow (plugins/ and tools/ hold what does)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from include.config import PROJECT_ROOT

INCLUDE = PROJECT_ROOT / "include"

_IMPORT_ALL = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
names = sorted(m.name for m in pkgutil.walk_packages(package.__path__, sys.argv[1] + "."))
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as err:
        failed[name] = f"{type(err).__name__}: {err}"
airflow = sorted(m for m in sys.modules if m == "airflow" or m.startswith("airflow."))
print(json.dumps({"modules": names, "failed": failed, "airflow": airflow[:10]}))
"""

_SOME_AIRFLOW_IMPORTS = """import os
import airflow
from airflowish import x
def f():
    from airflow.sdk import task
"""


def airflow_imports(path: Path) -> list[str]:
    """Returns `line: statement` for every import of airflow in a Python file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module or ""]
        else:
            continue
        if any(m == "airflow" or m.startswith("airflow.") for m in modules):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_scan_finds_airflow_imports_at_any_depth(tmp_path):
    """The scan flags top-level and nested Airflow imports and nothing else, so its "none" is meaningful."""
    module = tmp_path / "module.py"
    module.write_text(_SOME_AIRFLOW_IMPORTS)
    assert airflow_imports(module) == ["2: import airflow", "5: from airflow.sdk import task"]


def test_no_include_module_imports_airflow():
    """No file under include/ has an `import airflow…` or `from airflow… import` statement, at any depth."""
    files = sorted(INCLUDE.rglob("*.py"))
    assert len(files) > 10, files
    offenders = {str(f.relative_to(PROJECT_ROOT)): hits for f in files if (hits := airflow_imports(f))}
    assert offenders == {}


def import_every_module(package: str) -> dict:
    """Returns the modules of `package`, those that failed to import and the airflow modules loaded."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, package],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=PROJECT_ROOT,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_every_include_module_loads_no_airflow():
    """A fresh interpreter imports every include module and has no airflow module loaded afterwards."""
    result = import_every_module("include")
    assert "include.registry.publish" in result["modules"] and "include.registry.store" in result["modules"]
    assert result["failed"] == {}
    assert result["airflow"] == []


def test_importing_the_tools_loads_airflow():
    """The same check run on tools/ (its Celery settings import Airflow) does see airflow loaded."""
    result = import_every_module("tools")
    assert result["failed"] == {} and "airflow" in result["airflow"]
